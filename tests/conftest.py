from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # CI checks the repository out with ../shared beside it

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared: real data (Fashion-MNIST, CIFAR-10 and ImageNet samples) and the TF fixtures."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not here (CI provides it beside the clone)")
    return SHARED


@pytest.fixture(scope="session")
def simclr_tf(shared_dir) -> Path:
    """Checkpoints and outputs written by the authors' TF code (see its README.md)."""
    return shared_dir / "fixtures" / "simclr-tf" / "r50_0.125x_sk1_s64"
