"""simclrv2: SimCLR / SimCLRv2 semi-supervised learning in PyTorch.

Contrastive pretraining of ResNets on unlabelled images, fine-tuning on a few labels, and
distillation into a student on the unlabelled images again.
"""

from simclrv2.export import load_encoder, load_exported, save_exported
from simclrv2.models import (
    build_encoder,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet200,
)
from simclrv2.version import __version__

__all__ = [
    "__version__",
    "build_encoder",
    "load_encoder",
    "load_exported",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet200",
    "save_exported",
]
