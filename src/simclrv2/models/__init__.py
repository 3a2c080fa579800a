"""Encoders (ResNet f), their registry of names, and heads (projection g, classifier) of SimCLR /
SimCLRv2."""

from simclrv2.models.heads import Classifier, ContrastiveModel, LinearClassifier, ProjectionHead
from simclrv2.models.registry import (
    ARCHITECTURES,
    Architecture,
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
from simclrv2.models.resnet import ResNet, ResNetSpec

__all__ = [
    "ARCHITECTURES",
    "Architecture",
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
