from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # CI checks the repository out with ../shared beside it

torch.set_num_threads(1)  # tiny test tensors: one thread is faster and immune to a busy core


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


TINY_OVERRIDES = [
    "model.arch=r18_0.125x_sk0", "model.cifar_stem=false", "runtime.channels_last=false",
    "pretrain.epochs=2", "pretrain.batch_size=32", "pretrain.warmup=0", "pretrain.knn_every=1", "knn.k=20",
    "finetune.epochs=2", "finetune.batch_size=16", "finetune.label_fractions=[0.1]",
    "distill.epochs=1", "distill.batch_size=32", "distill.warmup=0",
]  # fmt: skip


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """An IDX folder of real Fashion-MNIST images (the embedded subset): 16 train and 4 test per class."""
    from simclrv2.data import class_balanced_indices, load_dataset
    from simclrv2.data.idx import write_idx

    directory = tmp_path_factory.mktemp("tiny-fashion-mnist")
    for split, stem, per_class in (("train", "train", 16), ("test", "t10k", 4)):
        data = load_dataset(None, split)
        keep = class_balanced_indices(data.labels, per_class=per_class, seed=0)
        write_idx(directory / f"{stem}-images-idx3-ubyte", data.images[keep, 0].numpy())
        write_idx(
            directory / f"{stem}-labels-idx1-ubyte", data.labels[keep].numpy().astype("uint8")
        )
    return directory


@pytest.fixture(scope="session")
def converted_tf(simclr_tf, tmp_path_factory) -> Path:
    """The authors' TF1 fixture checkpoint (r50_0.125x_sk1, RGB, with its projection head and a
    supervised head) converted to an export, as ``simclrv2 convert-tf`` writes it."""
    from simclrv2.convert.tf_simclr import convert

    out = tmp_path_factory.mktemp("converted") / "model"
    convert(simclr_tf / "tf1" / "ckpt", out, head_input=0)
    return out
