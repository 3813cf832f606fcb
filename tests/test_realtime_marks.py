"""The `realtime` mark finds what runs in real time by itself (tests/realtime.py): what a test names, what the
helpers of ours it names reach, a local import, a port URL. The examples are compiled here from text, so this
module names none of them and stays in the CPU phase."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

from core.appliance.appliance import Appliance
from tests.realtime import reaches_live


def example(source: str, **names):
    """The function ``f`` of ``source``, as if written in a test module with ``names`` imported."""
    namespace = {"__name__": "tests.test_example", **names}
    exec(compile(textwrap.dedent(source), "<example>", "exec"), namespace)
    return namespace["f"]


@pytest.mark.parametrize("source, names", [
    ("def f(tmp_path):\n    Appliance(tmp_path).start()", {"Appliance": Appliance}),
    ("def f(tmp_path):\n    return A(tmp_path)", {"A": Appliance}),                       # another name
    ("def f():\n    import subprocess\n    subprocess.run(['true'], timeout=5)", {}),   # a local import
    ("def f():\n    return check('injsim://?scenario=nominal', seconds=1)", {}),          # a simulator's URL
    ("def f():\n    return os.openpty()", {"os": __import__("os")}),
    ("def started(p):\n    return Appliance(p)\n"                                         # through a helper of ours
     "def f(tmp_path):\n    assert started(tmp_path)", {"Appliance": Appliance}),
    ("class Box:\n    def open(self):\n        threading.Thread(target=print).start()\n"  # through a class of ours
     "def f():\n    Box().open()", {"threading": __import__("threading")}),
    ("def f():\n    return [lambda: time.sleep(0.1)]", {"time": __import__("time")}),   # in a nested function
], ids=["appliance", "renamed", "local-import", "port-url", "openpty", "helper", "class", "nested"])
def test_what_reaches_a_live_thing_is_realtime(source, names):
    assert reaches_live(example(source, **names))


def test_a_computation_is_not_realtime():
    f = example("""
        def helper(n):
            return np.linspace(0, 1, n)
        def f():
            timeline = {"time": 1.0}                 # a word, not the module
            assert helper(5).mean() == timeline["time"] / 2
    """, np=np)
    assert not reaches_live(f)


def test_the_suites_own_live_helpers_are_found():
    from tests import test_api_stream, test_kernels
    from tests.shared_procedure import run_procedure_pass
    assert reaches_live(test_api_stream.start_server) and reaches_live(run_procedure_pass)
    assert not any(reaches_live(value) for name, value in vars(test_kernels).items() if name.startswith("test_"))
