"""Fixtures shared across test modules."""
from __future__ import annotations

import pytest

from tests.shared_procedure import ProcedureUnderLoad, observe_procedure_under_load


@pytest.fixture(scope="session")
def procedure_under_load(tmp_path_factory) -> ProcedureUnderLoad:
    """One pass of the scripted procedure (~45 s), observed once for every test that needs it; the appliance is
    stopped before the first of them runs, so it does not run on behind the rest of the suite."""
    return observe_procedure_under_load(tmp_path_factory.mktemp("procedure") / "data")
