import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def kdforge_cli(*args: str, cwd: Path | None = None, timeout: int = 300):
    """Run the real console entry point in a subprocess; returns CompletedProcess."""
    import subprocess

    return subprocess.run(
        [sys.executable, "-m", "kdforge", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
        env={**os.environ, "KDFORGE_DEVICE": "cpu"},
    )


# Small trained digits models shared by the compression and bench tests (trained once
# per process, see tests/compress/trained.py); verbs are always applied to a deepcopy.
@pytest.fixture(scope="session")
def digits():
    from tests.compress import trained

    return trained.digits()


@pytest.fixture(scope="session")
def digits_mlp():
    from tests.compress import trained

    return trained.digits_mlp()


@pytest.fixture(scope="session")
def digits_cnn():
    from tests.compress import trained

    return trained.digits_cnn()
