"""Which tests run in real time: the `realtime` mark, given automatically by what a test's code reaches.

README's test command runs the suite in two phases: the tests that only compute, on 2 pytest-xdist workers,
then the `realtime` tests in one process, alone on the machine. A realtime test's outcome depends on wall-clock
time or live threads and processes (an appliance and its 30 fps phantom, uvicorn, a simulator on a pty or a
socket, Mosquitto, PostgreSQL, chromium, a subprocess with a timeout): next to a CPU-bound test on the other
worker it starves (test_api's live appliance read its 15 pulses/s run as 13.3).

Nobody has to remember the mark: a test is realtime when its function, one of its fixtures, or any function or
class of tests/ those reach (followed through their global names, to any depth) names one of the LIVE things
below. `pytestmark = pytest.mark.realtime` or `@pytest.mark.realtime` marks one by hand; nothing unmarks one.
"""
from __future__ import annotations

import dis
import importlib
import inspect
import sys
import types
from functools import cache

import pytest

# Modules whose use means live I/O, processes, threads or the clock (any attribute of them: subprocess.run,
# pty.openpty, time.sleep, threading.Thread, socket.socket, serial.serial_for_url).
LIVE_MODULES = (
    "asyncio", "multiprocessing", "pty", "selectors", "signal", "socket", "subprocess", "threading", "time",
    "serial", "uvicorn", "playwright.sync_api", "fastapi.testclient", "starlette.testclient",
    "concurrent.futures",
    # the tests' own live helpers (an appliance in a subprocess, the fleet's broker and database, the vendor's
    # injector emulator, the shared procedure pass, waiting on something running)
    "tests.live", "tests.fleet_parts", "tests.fleet_appliance", "tests.vendor_emulator",
    "tests.shared_procedure", "tests.waiting",
)
# The product's parts that start threads or processes or pace in real time, by "module:name".
LIVE_OBJECTS = (
    "core.appliance.appliance:Appliance", "core.appliance.worker:AnalysisWorker",
    "core.appliance.frame_loop:FrameLoop", "core.store.eventlog:EventLog", "core.store.writer:Writer",
    "core.store.recorder:ProcedureRecorder", "core.fleet.publisher:Publisher", "core.fleet.ingest:Ingester",
    "core.ops.watchdog:Watchdog", "firmware_bridge.bridge:InjectorBridge", "firmware_bridge.transport:SerialTransport",
    "firmware_bridge.sim_lines:open_line", "firmware_bridge.sim_lines:play",
    "core.sources.frames:FrameSource", "core.sources.open:open_video",    # sources read on the clock, paced
    "api.app:create_app", "fastapi.testclient:TestClient",
    # commands that read or play a port for some seconds, or run a command with a timeout
    "api.cli.check:check_main", "api.cli.simulate:simulate_main", "api.cli.doctor:doctor_main",
    "core.ops.doctor:check_serial", "core.ops.doctor:check_clock",
)
# Attribute names that mean the same when reached through a module not listed above (os.openpty, os.fork).
LIVE_ATTRIBUTES = frozenset({"openpty", "fork", "forkpty", "posix_spawn", "system", "popen", "kill", "killpg"})
# Port URLs in a test's constants: a simulator or a device behind a socket, played in real time.
LIVE_URLS = ("injsim://", "socket://", "rfc2217://", "loop://")


@cache
def _live_things() -> tuple[frozenset[int], tuple[type, ...]]:
    """ids of the live modules and objects (those importable here), and the live classes (subclasses count)."""
    ids, classes = set(), []
    for name in LIVE_MODULES:
        module = sys.modules.get(name)
        if module is None:
            try:
                module = importlib.import_module(name)
            except ImportError:          # not installed here: nothing can name it either
                continue
        ids.add(id(module))
    for spec in LIVE_OBJECTS:
        module_name, attr = spec.split(":")
        obj = getattr(importlib.import_module(module_name), attr)
        ids.add(id(obj))
        if isinstance(obj, type):
            classes.append(obj)
    return frozenset(ids), tuple(classes)


def _imports_live(module_name: str) -> bool:
    return any(module_name == live or module_name.startswith(live + ".") for live in LIVE_MODULES)


def _is_live(obj: object) -> bool:
    if isinstance(obj, str):
        return obj.startswith(LIVE_URLS)
    ids, classes = _live_things()
    if id(obj) in ids:
        return True
    return isinstance(obj, type) and issubclass(obj, classes)


def _ours(obj: object) -> bool:
    """A function or class of the tests' own code, to be followed."""
    return (getattr(obj, "__module__", None) or "").split(".")[0] == "tests"


def _codes(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _codes(const)


def _functions_of(obj: object) -> list:
    """The plain functions behind a test, fixture, helper or class of ours (wrappers and methods unwrapped)."""
    if isinstance(obj, (staticmethod, classmethod, types.MethodType)):
        obj = obj.__func__
    if isinstance(obj, property):
        return [f for f in (obj.fget, obj.fset, obj.fdel) if f is not None]
    if isinstance(obj, type):
        return [f for klass in obj.__mro__ if _ours(klass) for value in vars(klass).values()
                for f in _functions_of(value)]
    inner = getattr(getattr(obj, "hypothesis", None), "inner_test", None)   # @given's wrapper
    if inner is not None:
        obj = inner
    obj = inspect.unwrap(obj) if callable(obj) else obj
    return [obj] if isinstance(obj, types.FunctionType) else []


def reaches_live(obj: object, _seen: set[int] | None = None) -> bool:
    """Whether ``obj`` (a test, fixture, helper or class of ours) names a live thing, itself or through the
    functions and classes of ours it names."""
    seen = set() if _seen is None else _seen
    if id(obj) in seen:
        return False
    seen.add(id(obj))
    for function in _functions_of(obj):
        globals_ = function.__globals__
        for code in _codes(function.__code__):
            if any(isinstance(c, str) and c.startswith(LIVE_URLS) for c in code.co_consts):
                return True
            if any(i.opname == "IMPORT_NAME" and _imports_live(i.argval) for i in dis.get_instructions(code)):
                return True      # `import subprocess` inside the test
            for name in code.co_names:
                if name in LIVE_ATTRIBUTES:
                    return True
                if name not in globals_:
                    continue
                value = globals_[name]
                if _is_live(value):
                    return True
                if _ours(value) and reaches_live(value, seen):
                    return True
                if isinstance(value, types.ModuleType) and value.__name__.split(".")[0] == "tests":
                    # `from tests import helpers` then helpers.start(): follow the names it has
                    for attr in code.co_names:
                        found = getattr(value, attr, None)
                        if found is not None and (_is_live(found) or (_ours(found) and reaches_live(found, seen))):
                            return True
        for value in (function.__defaults__ or ()):
            if _ours(value) and reaches_live(value, seen):
                return True
    return False


def is_realtime(item: pytest.Item) -> bool:
    if item.get_closest_marker("realtime") is not None:
        return True
    function = getattr(item, "function", None)
    if function is not None and reaches_live(function):
        return True
    params = getattr(getattr(item, "callspec", None), "params", {})
    if any(_is_live(value) or (_ours(value) and reaches_live(value)) for value in params.values()):
        return True
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for name in info.names_closure:
        for fixturedef in info.name2fixturedefs.get(name, ()):
            if _ours(fixturedef.func) and reaches_live(fixturedef.func):
                return True
    return False


def mark_realtime(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("realtime") is None and is_realtime(item):
            item.add_marker(pytest.mark.realtime)
