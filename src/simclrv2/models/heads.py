"""Heads on top of the encoder's h: the projection head g, and the linear (supervised) classifier.

v1 (SimCLR, Sec. 2.1): 2 layers, d -> d (ReLU) -> 128. v2 (SimCLRv2, Sec. 2): 3 layers. As in the
authors' code every layer is a bias-free Linear followed by BatchNorm; hidden layers end in ReLU and
the last layer's BatchNorm has a scale but no shift. Fine-tuning reads output ``head_input`` of g:
0 = h (v1), 1 = output of the first head layer (v2 default), -1 = z.
"""

from __future__ import annotations

from torch import Tensor, nn

from simclrv2.errors import UserError

HEAD_INIT_STD = 0.01  # authors' LinearLayer: RandomNormal(stddev=0.01)


class BatchNormNoShift(nn.BatchNorm1d):
    """BatchNorm1d with a learned scale and no shift (TF ``center=False``)."""

    def __init__(self, features: int) -> None:
        super().__init__(features)
        self.register_parameter("bias", None)

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        nn.init.ones_(self.weight)


def _linear(in_dim: int, out_dim: int, bias: bool) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim, bias=bias)
    nn.init.normal_(layer.weight, std=HEAD_INIT_STD)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


class ProjectionHead(nn.Module):
    """Projection head g: h (N, in_dim) -> z (N, out_dim). ``num_layers`` 2 for v1, 3 for v2."""

    def __init__(
        self, in_dim: int, num_layers: int = 3, hidden_dim: int | None = None, out_dim: int = 128
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise UserError(f"projection head needs at least 1 layer, got num_layers={num_layers}")
        hidden_dim = hidden_dim or in_dim
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        layers: list[nn.Module] = []
        for j in range(num_layers - 1):
            width_in = in_dim if j == 0 else hidden_dim
            layers.append(
                nn.Sequential(
                    _linear(width_in, hidden_dim, bias=False),
                    nn.BatchNorm1d(hidden_dim),
                    nn.ReLU(inplace=True),
                )
            )
        last_in = in_dim if num_layers == 1 else hidden_dim
        layers.append(
            nn.Sequential(_linear(last_in, out_dim, bias=False), BatchNormNoShift(out_dim))
        )
        self.layers = nn.ModuleList(layers)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def prefix(self, head_input: int) -> nn.Sequential:
        """The first layers of g up to the output ``head_input`` names (shared, not copied)."""
        count = head_input if head_input >= 0 else self.num_layers + 1 + head_input
        if not 0 <= count <= self.num_layers:
            raise UserError(
                f"head input {head_input} is out of range for a {self.num_layers}-layer head; "
                f"use 0 (h) to {self.num_layers}, or -1 (z)"
            )
        return nn.Sequential(*self.layers[:count])

    def output_dim(self, head_input: int) -> int:
        """Width of the output that ``head_input`` names."""
        count = len(self.prefix(head_input))
        if count == 0:
            return self.in_dim
        return self.out_dim if count == self.num_layers else self.hidden_dim

    def forward(self, h: Tensor) -> Tensor:
        for layer in self.layers:
            h = layer(h)
        return h  # z: (N, out_dim)


class LinearClassifier(nn.Linear):
    """Linear classifier (the authors' ``head_supervised``): weights N(0, 0.01), bias 0."""

    def __init__(self, in_dim: int, num_classes: int) -> None:
        super().__init__(in_dim, num_classes)
        nn.init.normal_(self.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(self.bias)


class Classifier(nn.Module):
    """Encoder, then the first layers of a projection head (may be none), then a linear classifier.

    The fine-tuned model of SimCLRv2 and the student of distillation both have this shape.
    """

    def __init__(self, encoder: nn.Module, head: nn.Sequential, linear: LinearClassifier) -> None:
        super().__init__()
        self.encoder, self.head, self.linear = encoder, head, linear

    @classmethod
    def from_pretrained(
        cls, encoder: nn.Module, projection_head: ProjectionHead, head_input: int, num_classes: int
    ) -> Classifier:
        """v2 fine-tuning: keep g up to ``head_input`` (1 in the paper) and add a classifier."""
        head = projection_head.prefix(head_input)
        return cls(
            encoder, head, LinearClassifier(projection_head.output_dim(head_input), num_classes)
        )

    def representation(self, x: Tensor) -> Tensor:
        """The classifier's input: h passed through the kept head layers."""
        return self.head(self.encoder(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.representation(x))  # logits: (N, num_classes)


class ContrastiveModel(nn.Module):
    """The pretraining network: encoder f then projection head g; returns (h, z)."""

    def __init__(self, encoder: nn.Module, projection_head: ProjectionHead) -> None:
        super().__init__()
        self.encoder, self.projection_head = encoder, projection_head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.encoder(x)
        return h, self.projection_head(h)
