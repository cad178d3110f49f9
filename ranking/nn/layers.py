"""Torch building blocks: input encoding, feed-forward towers, cross layers, list attention.

Shapes: B lists per batch, L rows per (padded) list, F dense features, C categorical columns, D vector
width (all vectors concatenated), E encoded width, H hidden width. ``mask`` (B, L) is True on real rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ranking.config import DenseTransform

#: Quantile knots per feature kept by the ``"quantile"`` transform (its resolution is 1 / QUANTILES).
QUANTILES = 128


def embedding_dim(cardinality: int, cap: int) -> int:
    """A table width that grows slowly with the number of ids (a small table needs few dimensions)."""
    return max(2, min(cap, round(1.6 * cardinality**0.56)))


class InputEncoder(nn.Module):
    """Dense features, embedded categorical ids and raw vectors -> one (B, L, E) input per row.

    Args:
        n_dense: F.
        cardinalities: table sizes of the C categorical columns.
        vector_dim: D (0 without vectors).
        dense_transform: ``"standardize"`` (z-score with training statistics, set by ``set_stats``) or
            ``"log1p_bn"`` (DASALC: sign(x) log(1 + |x|), then batch norm over real rows), or
            ``"quantile"`` (rank-Gauss: the training CDF, then the normal's inverse CDF; also from
            ``set_stats``).
        noise_std: Gaussian noise added to the transformed dense features in training (DASALC's
            augmentation); 0 disables it.
        max_embedding_dim: cap on an embedding table's width.

    Example:
        >>> enc = InputEncoder(3, cardinalities=[10], vector_dim=4, dense_transform="log1p_bn")
        >>> mask = torch.tensor([[True, True, False]])
        >>> out = enc(torch.rand(1, 3, 3), torch.zeros(1, 3, 1, dtype=torch.long), torch.rand(1, 3, 4), mask)
        >>> out.shape == (1, 3, enc.out_dim), enc.out_dim
        (True, 13)
    """

    def __init__(
        self,
        n_dense: int,
        cardinalities: Sequence[int] = (),
        vector_dim: int = 0,
        dense_transform: DenseTransform = "standardize",
        noise_std: float = 0.0,
        max_embedding_dim: int = 16,
    ) -> None:
        super().__init__()
        self.dense_transform = dense_transform
        self.noise_std = noise_std
        self.register_buffer("mean", torch.zeros(n_dense))  # (F,)
        self.register_buffer("std", torch.ones(n_dense))  # (F,)
        if dense_transform == "quantile":
            self.register_buffer("knots", torch.zeros(n_dense, QUANTILES))  # (F, Q), sorted per feature
        self.bn = nn.BatchNorm1d(n_dense) if dense_transform == "log1p_bn" and n_dense else None
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, embedding_dim(c, max_embedding_dim)) for c in cardinalities
        )
        self.out_dim = n_dense + sum(e.embedding_dim for e in self.embeddings) + vector_dim

    @torch.no_grad()
    def set_stats(self, dense: Tensor) -> None:
        """Standardisation statistics from training rows (N, F); constant columns keep std 1."""
        self.mean.copy_(dense.mean(0))
        std = dense.std(0)
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
        if self.dense_transform == "quantile" and dense.shape[0]:
            probs = torch.linspace(0, 1, QUANTILES, dtype=torch.float64)
            self.knots.copy_(torch.quantile(dense.double(), probs, dim=0).T.to(self.knots.dtype))

    def _quantile_normal(self, dense: Tensor) -> Tensor:
        """Each feature through its training CDF, then the standard normal's inverse CDF (rank-Gauss).

        Sparse LTR features are mostly 0 with a thin tail: z-scores blow rare values up to tens of standard
        deviations, which small training sets then overfit. Ranks are bounded and keep only the order a
        tree would use. Ties (a mass at 0) take their mid-rank, so an all-zero column maps to 0.
        """
        shape = dense.shape
        x = dense.reshape(-1, shape[-1]).T.contiguous()  # (F, M)
        left = torch.searchsorted(self.knots, x, side="left")  # (F, M)
        right = torch.searchsorted(self.knots, x, side="right")  # (F, M)
        half = 0.5 / QUANTILES
        u = ((left + right).to(dense.dtype) * half).clamp(half, 1 - half)  # (F, M) mid-rank in (0, 1)
        return torch.special.ndtri(u).T.reshape(shape)  # (B, L, F)

    def forward(self, dense: Tensor, cats: Tensor, vecs: Tensor, mask: Tensor) -> Tensor:
        if self.dense_transform == "standardize":
            x = (dense - self.mean) / self.std  # (B, L, F)
        elif self.dense_transform == "quantile":
            x = self._quantile_normal(dense)  # (B, L, F)
        else:
            x = torch.sign(dense) * torch.log1p(dense.abs())  # (B, L, F)
            if self.bn is not None:
                # Normalise real rows only: padding must not shift the batch statistics.
                normed = torch.zeros_like(x)
                normed[mask] = self.bn(x[mask])  # (M, F) with M real rows
                x = normed
        if self.training and self.noise_std > 0:
            x = x + self.noise_std * torch.randn_like(x)
        parts = [x]
        parts += [emb(cats[..., j]) for j, emb in enumerate(self.embeddings)]  # (B, L, e_j) each
        if vecs.shape[-1]:
            parts.append(vecs)  # (B, L, D)
        return torch.cat(parts, dim=-1)  # (B, L, E)


class Dropout(nn.Module):
    """Inverted dropout whose mask takes 16 random bits per unit, drawn 64 at a time.

    ``nn.Dropout`` on CPU draws one Bernoulli per unit: on DCN-V2's world batches (8,192 rows x 256) that was
    a quarter of a training step, about 4x this. The drop rate is ``p`` rounded to 1/65,536; the draws come
    from torch's global generator, so a seeded run repeats. No parameters or buffers: a saved model's weights
    load the same into either module.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        # Units whose signed 16-bit draw lies below the threshold are dropped.
        self._threshold = round(p * 65536) - 32768
        self._scale = 1.0 / (1.0 - (self._threshold + 32768) / 65536)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self._threshold == -32768:
            return x
        n = x.numel()
        words = torch.randint(-(2**63), 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        bits = words.view(torch.int16)[:n].view(x.shape)
        return x * (bits >= self._threshold) * self._scale

    def extra_repr(self) -> str:
        return f"p={self.p}"


def feed_forward(in_dim: int, hidden: Sequence[int], dropout: float) -> tuple[nn.Sequential, int]:
    """Linear -> ReLU -> Dropout per hidden width; returns the tower and its output width."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), Dropout(dropout)]
        width = h
    return nn.Sequential(*layers), width


class CrossNetwork(nn.Module):
    """DCN-V2 cross layers (Wang et al., WWW 2021): x_{l+1} = x_0 * (W_l x_l + b_l) + x_l.

    Each layer multiplies the input x_0 element-wise with a linear map of the current x_l, so layer l models
    feature crosses of degree l + 1; the residual keeps lower degrees. With ``rank`` r, W_l = U_l V_l^T
    (E x r and r x E): the low-rank ("mixture-free") variant with 2 E r instead of E^2 weights per layer.

    Args:
        dim: E, the width of x_0.
        n_layers: number of cross layers.
        rank: None for full-rank W_l, else r.

    Example:
        >>> net = CrossNetwork(dim=8, n_layers=2, rank=4)
        >>> net(torch.rand(5, 8)).shape
        torch.Size([5, 8])
    """

    def __init__(self, dim: int, n_layers: int, rank: int | None = None) -> None:
        super().__init__()
        if rank is None:
            self.maps = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))
        else:
            self.maps = nn.ModuleList(
                nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim)) for _ in range(n_layers)
            )

    def forward(self, x0: Tensor) -> Tensor:
        x = x0  # (M, E)
        for w in self.maps:
            x = x0 * w(x) + x  # (M, E)
        return x


class ListAttention(nn.Module):
    """Self-attention across the rows of each list, then a residual feed-forward (a Transformer block).

    Every row attends to every real row of its own list, so its output depends on what else is shown.
    Padding rows are excluded as keys.

    Example:
        >>> att = ListAttention(dim=8, heads=2)
        >>> mask = torch.tensor([[True, True, False], [True, False, False]])
        >>> att(torch.rand(2, 3, 8), mask).shape
        torch.Size([2, 3, 8])
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        attended, _ = self.attn(x, x, x, key_padding_mask=~mask, need_weights=False)  # (B, L, H)
        x = self.norm1(x + self.dropout(attended))  # (B, L, H)
        return self.norm2(x + self.dropout(self.ff(x)))  # (B, L, H)
