"""Fixtures shared across test modules."""
from __future__ import annotations

import pytest

from tests.shared_procedure import ProcedurePass, run_procedure_pass


@pytest.fixture(scope="session")
def procedure_pass(tmp_path_factory) -> ProcedurePass:
    """One pass of the scripted procedure (~55 s) through `cathlab-edge run` in a subprocess, observed once for
    the short soak, the end-to-end test and the six-image-clients test; the appliance is stopped with SIGTERM
    before the first of them runs, so it does not run on behind the rest of the suite."""
    return run_procedure_pass(tmp_path_factory.mktemp("procedure") / "data")
