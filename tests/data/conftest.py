"""Shared fixtures for the rnnkit.data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# ../shared/data relative to the repository root.
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real datasets folder; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real datasets not available: {SHARED_DATA} does not exist (tests marked 'data' need ../shared/data)"
        )
    return SHARED_DATA
