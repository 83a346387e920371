from __future__ import annotations

from pathlib import Path

import pytest
from reload_helpers import CONFIG, MakeProject


@pytest.fixture
def project(make_project: MakeProject) -> Path:
    """A project serving `hello` and `other`, per_worker."""
    return make_project(CONFIG, ["hello", "other"])
