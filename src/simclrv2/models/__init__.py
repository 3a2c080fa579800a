"""Encoders (ResNet f) and heads (projection g, classifier) of SimCLR / SimCLRv2."""

from simclrv2.models.heads import Classifier, ContrastiveModel, LinearClassifier, ProjectionHead
from simclrv2.models.resnet import (
    PAPER_PARAMS_M,
    ResNet,
    ResNetSpec,
    arch_name,
    build_encoder,
    parse_arch,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    resnet200,
)

__all__ = [
    "PAPER_PARAMS_M",
    "Classifier",
    "ContrastiveModel",
    "LinearClassifier",
    "ProjectionHead",
    "ResNet",
    "ResNetSpec",
    "arch_name",
    "build_encoder",
    "parse_arch",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnet200",
]
