"""Fixtures shared across test modules, and how pytest-xdist keeps the tests sharing one on one worker."""
from __future__ import annotations

import pytest

from tests.realtime import mark_realtime
from tests.shared_procedure import ProcedurePass, run_procedure_pass


@pytest.fixture(scope="session")
def procedure_pass(tmp_path_factory) -> ProcedurePass:
    """One pass of the scripted procedure (~55 s) through `cathlab-edge run` in a subprocess, observed once for
    the short soak, the end-to-end test and the six-image-clients test; the appliance is stopped with SIGTERM
    before the first of them runs, so it does not run on behind the rest of the suite."""
    return run_procedure_pass(tmp_path_factory.mktemp("procedure") / "data")


@pytest.hookimpl(tryfirst=True)  # before -m selects on `realtime` and xdist turns the marks into groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test that runs in real time gets the `realtime` mark (tests/realtime.py), so README's command
    runs it in the second phase, alone, not beside a CPU-bound test on the other worker.

    Under `--dist loadgroup` (README's command) every test without a group is scheduled on its own, so the
    tests of one module would alternate between the workers and each worker would build the module's fixtures
    (a server, a phantom stack) again. A test using one of our module- or session-scoped fixtures joins that
    fixture's group instead: built once, on one worker. Tests marked `xdist_group` by hand keep their group."""
    mark_realtime(items)
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = shared_fixture_group(item)
            if group is not None:
                item.add_marker(pytest.mark.xdist_group(group))
    if getattr(config.option, "loadgroup", False):
        for item in items:
            tell_xdist_the_group(item)


def shared_fixture_group(item: pytest.Item) -> str | None:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    groups = []
    for name in info.names_closure:
        for fixturedef in info.name2fixturedefs.get(name, ())[-1:]:
            if not fixturedef.baseid.startswith("tests"):   # pytest's and plugins' own (tmp_path_factory ...)
                continue
            if fixturedef.scope == "session":
                groups.append(f"session-{name}")
            elif fixturedef.scope in ("package", "module"):
                groups.append(item.module.__name__ if item.module is not None else fixturedef.baseid)
    return min(groups) if groups else None


def tell_xdist_the_group(item: pytest.Item) -> None:
    """xdist tells the controller a test's group by "@group" at the end of its node id, written on the worker
    to ``item._nodeid``. pytest 9.2's node ids are structured and that write is lost (pytest-xdist#1386): every
    group was split over both workers and the procedure's 50 s pass ran on each. Write it where pytest keeps it
    (xdist's own write, where it takes, only appends the same name again: its scheduler reads the last one)."""
    names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                    for m in item.iter_markers("xdist_group")})
    if not names or not hasattr(item, "_id"):      # older pytest: xdist's own write takes
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:                            # pytest moved it: the groups may split (slower, still right)
        return
    item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")
