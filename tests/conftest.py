from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """The real datasets in ../shared/data; tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(int(os.environ.get("RNNKIT_TEST_THREADS", "1")))
