"""The torch scoring networks: one ``forward(dense, cats, vecs, mask) -> (B, L)`` for every model.

Inputs: dense (B, L, F) float, cats (B, L, C) long, vecs (B, L, D) float, mask (B, L) bool (True on real
rows). Output: one score per row; padding rows get a score too, which callers ignore.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ranking.nn.layers import CrossNetwork, DenseTransform, InputEncoder, ListAttention, feed_forward


class ScoringNet(nn.Module):
    """Base: an ``InputEncoder`` in front; subclasses map its (B, L, E) output to (B, L) scores."""

    def __init__(self, encoder: InputEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, dense: Tensor, cats: Tensor, vecs: Tensor, mask: Tensor) -> Tensor:
        return self.head(self.encoder(dense, cats, vecs, mask), mask)

    def head(self, x: Tensor, mask: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class LinearNet(ScoringNet):
    """A weighted sum of the encoded inputs: the baseline every other model must beat.

    Example:
        >>> net = LinearNet(InputEncoder(4))
        >>> net(torch.rand(2, 3, 4), torch.zeros(2, 3, 0, dtype=torch.long), torch.zeros(2, 3, 0),
        ...     torch.ones(2, 3, dtype=torch.bool)).shape
        torch.Size([2, 3])
    """

    def __init__(self, encoder: InputEncoder) -> None:
        super().__init__(encoder)
        self.out = nn.Linear(encoder.out_dim, 1)

    def head(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.out(x).squeeze(-1)  # (B, L)


class MLPNet(ScoringNet):
    """A feed-forward tower scoring each row on its own.

    Example:
        >>> net = MLPNet(InputEncoder(4), hidden=[16, 8], dropout=0.1)
        >>> net(torch.rand(2, 3, 4), torch.zeros(2, 3, 0, dtype=torch.long), torch.zeros(2, 3, 0),
        ...     torch.ones(2, 3, dtype=torch.bool)).shape
        torch.Size([2, 3])
    """

    def __init__(self, encoder: InputEncoder, hidden: Sequence[int], dropout: float) -> None:
        super().__init__(encoder)
        self.tower, width = feed_forward(encoder.out_dim, hidden, dropout)
        self.out = nn.Linear(width, 1)

    def head(self, x: Tensor, mask: Tensor) -> Tensor:
        return self.out(self.tower(x)).squeeze(-1)  # (B, L, H) -> (B, L)


class DCNv2Net(ScoringNet):
    """DCN-V2 (Wang et al., WWW 2021): explicit cross layers plus a deep tower, per row.

    ``structure="stacked"`` feeds the cross network's output to the deep tower; ``"parallel"`` runs both on
    x_0 and concatenates their outputs. ``rank`` picks low-rank cross layers (None: full rank).

    Example:
        >>> net = DCNv2Net(InputEncoder(4), cross_layers=2, rank=None, hidden=[8], dropout=0.0,
        ...                structure="parallel")
        >>> net(torch.rand(2, 3, 4), torch.zeros(2, 3, 0, dtype=torch.long), torch.zeros(2, 3, 0),
        ...     torch.ones(2, 3, dtype=torch.bool)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        encoder: InputEncoder,
        cross_layers: int,
        rank: int | None,
        hidden: Sequence[int],
        dropout: float,
        structure: Literal["stacked", "parallel"],
    ) -> None:
        super().__init__(encoder)
        dim = encoder.out_dim
        self.structure = structure
        self.cross = CrossNetwork(dim, cross_layers, rank)
        self.deep, width = feed_forward(dim, hidden, dropout)
        self.out = nn.Linear(width + dim if structure == "parallel" else width, 1)

    def head(self, x: Tensor, mask: Tensor) -> Tensor:
        if self.structure == "stacked":
            z = self.deep(self.cross(x))  # (B, L, E) -> (B, L, H)
        else:
            z = torch.cat([self.cross(x), self.deep(x)], dim=-1)  # (B, L, E + H)
        return self.out(z).squeeze(-1)  # (B, L)


class DASALCNet(ScoringNet):
    """DASALC (Qin et al., ICLR 2021): a row tower modulated by list context through a latent cross.

    The encoder applies sign(x) log(1 + |x|) and batch norm, with Gaussian noise in training (data
    augmentation). A feed-forward tower gives each row's representation h; a self-attention branch over the
    list gives a; the latent cross h * (1 + a) lets the list context rescale each row's representation
    before a linear layer scores it.

    Example:
        >>> enc = InputEncoder(4, dense_transform="log1p_bn", noise_std=0.1)
        >>> net = DASALCNet(enc, hidden=[16, 16], dropout=0.1, attention_layers=1, heads=2)
        >>> mask = torch.tensor([[True, True, True], [True, True, False]])
        >>> net(torch.rand(2, 3, 4), torch.zeros(2, 3, 0, dtype=torch.long), torch.zeros(2, 3, 0), mask).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        encoder: InputEncoder,
        hidden: Sequence[int],
        dropout: float,
        attention_layers: int,
        heads: int,
    ) -> None:
        super().__init__(encoder)
        self.tower, width = feed_forward(encoder.out_dim, hidden, dropout)
        self.project = nn.Linear(encoder.out_dim, width)
        self.attention = nn.ModuleList(ListAttention(width, heads, dropout) for _ in range(attention_layers))
        self.out = nn.Linear(width, 1)

    def head(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.tower(x)  # (B, L, H)
        a = self.project(x)  # (B, L, H)
        for block in self.attention:
            a = block(a, mask)  # (B, L, H)
        return self.out(h * (1.0 + a)).squeeze(-1)  # latent cross, (B, L)


def build_encoder(
    n_dense: int, cardinalities: Sequence[int], vector_dim: int, transform: DenseTransform, noise_std: float
) -> InputEncoder:
    return InputEncoder(n_dense, cardinalities, vector_dim, dense_transform=transform, noise_std=noise_std)
