"""The M3 user encoder (Tang et al., WWW 2019, "Towards Neural Mixture Recommender for Long Range Dependent
User Sequences"), sized for block click logs."""

from __future__ import annotations

import math

import torch
from torch import nn

from features.embeddings.sequences import N_GAP_BUCKETS

N_RANGES = 3  # short, mid, long


class M3(nn.Module):
    r"""One user vector from a history of consumed blocks, mixing three ranges through a context gate.

    With item embeddings :math:`e_i` (shared with the output layer) plus time-gap embeddings :math:`g_t`,
    inputs :math:`x_t = e_{i_t} + g_t`, and the context :math:`c = \mathrm{MLP}(e_{i_T} + g^{ctx})` built
    from the last item and the time since it:

    .. math::

        z_s = W_s \,\mathrm{mean}(e_{i_{T-S+1..T}}), \quad
        z_m = W_m\, \mathrm{GRU}(x_{T-M+1..T}), \quad
        z_l = \sum_t \mathrm{softmax}_t\!\left(\frac{(W_q c)^\top W_k x_t}{\sqrt d}\right) W_v x_t

        \alpha = \mathrm{softmax}(W_g c) \in \Delta^3, \qquad u = \alpha_s z_s + \alpha_m z_m + \alpha_l z_l

    and the next item's logit is :math:`u^\top e_j`. A session that has just started (large context gap)
    can lean on the long range; a click seconds ago on the short one.

    Args:
        n_items: vocabulary size including the padding index 0.
        dim: width of item and user vectors.
        short_items: S, recent items the short-range encoder averages.
        mid_items: M, recent items the GRU reads.
        dropout: on the user vector while training.
        sparse: the item table's gradient holds only the rows a step used (``torch.optim.SparseAdam``).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> m3 = M3(n_items=50, dim=8, short_items=1, mid_items=4)
        >>> items = torch.tensor([[0, 0, 3, 7, 9], [5, 6, 7, 8, 2]])  # (B=2, L=5), left-padded
        >>> gaps = torch.tensor([[0, 0, 1, 4, 3], [1, 5, 5, 2, 9]])
        >>> ctx_gap = torch.tensor([3, 12])
        >>> user, gate = m3(items, gaps, ctx_gap)
        >>> tuple(user.shape), tuple(gate.shape)
        ((2, 8), (2, 3))
        >>> bool(torch.allclose(gate.sum(dim=1), torch.ones(2)))
        True
        >>> tuple(m3.score(user).shape)  # logits over the 49 real items
        (2, 49)
    """

    def __init__(
        self,
        *,
        n_items: int,
        dim: int = 64,
        short_items: int = 1,
        mid_items: int = 20,
        dropout: float = 0.1,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self.n_items, self.dim = n_items, dim
        self.short_items, self.mid_items = short_items, mid_items
        self.items = nn.Embedding(n_items, dim, padding_idx=0, sparse=sparse)
        self.gaps = nn.Embedding(N_GAP_BUCKETS, dim, padding_idx=0)
        self.ctx_gaps = nn.Embedding(N_GAP_BUCKETS, dim, padding_idx=0)
        self.context = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.short = nn.Linear(dim, dim)
        self.gru = nn.GRU(dim, dim, batch_first=True)
        self.mid = nn.Linear(dim, dim)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.gate = nn.Linear(dim, N_RANGES)
        self.drop = nn.Dropout(dropout)
        # Small item vectors: sampled softmax starts near uniform, and untrained (cold) blocks score ~0.
        nn.init.normal_(self.items.weight, std=0.1)
        nn.init.normal_(self.gaps.weight, std=0.1)
        nn.init.normal_(self.ctx_gaps.weight, std=0.1)
        with torch.no_grad():
            self.items.weight[0].zero_()
            self.gaps.weight[0].zero_()
            self.ctx_gaps.weight[0].zero_()

    def forward(
        self, items: torch.Tensor, gaps: torch.Tensor, ctx_gap: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """User vectors and gate weights.

        Args:
            items: (B, L) item indices, right-aligned (the most recent last), 0 = padding; every row needs
                at least its last position filled.
            gaps: (B, L) gap buckets of each item to its predecessor (0 = padding).
            ctx_gap: (B,) gap bucket of the time from the last item to the moment the vector is for.

        Returns:
            user (B, dim) and gate (B, 3) in the order short, mid, long (rows sum to 1).
        """
        mask = items > 0  # (B, L)
        emb = self.items(items)  # (B, L, D)
        x = emb + self.gaps(gaps)  # (B, L, D)
        c = self.context(emb[:, -1] + self.ctx_gaps(ctx_gap))  # (B, D)

        recent = mask[:, -self.short_items :].unsqueeze(-1).float()  # (B, S, 1)
        short_mean = (emb[:, -self.short_items :] * recent).sum(1) / recent.sum(1).clamp(min=1.0)  # (B, D)
        z_short = self.short(short_mean)  # (B, D)

        _, h = self.gru(x[:, -self.mid_items :])  # h: (1, B, D); left padding only feeds zero inputs
        z_mid = self.mid(h[0])  # (B, D)

        q = self.query(c)  # (B, D)
        att = torch.einsum("bd,bld->bl", q, self.key(x)) / math.sqrt(self.dim)  # (B, L)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=1)  # (B, L)
        z_long = torch.einsum("bl,bld->bd", att, self.value(x))  # (B, D)

        gate = self.gate(c).softmax(dim=1)  # (B, 3)
        ranges = torch.stack([z_short, z_mid, z_long], dim=1)  # (B, 3, D)
        user = (gate.unsqueeze(-1) * ranges).sum(1)  # (B, D)
        return self.drop(user), gate

    def item_vectors(self) -> torch.Tensor:
        """(n_items - 1, D) the real items' vectors (padding dropped); block ``i`` is row ``i``."""
        return self.items.weight[1:]

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """The vectors of real items ``items`` (0-based, as in ``item_vectors``), looked up through the
        embedding so that a sparse table's gradient stays sparse."""
        return self.items(items + 1)

    def score(self, user: torch.Tensor) -> torch.Tensor:
        """(B, n_items - 1) logits of every real item for user vectors (B, D)."""
        return user @ self.item_vectors().T  # (B, n_items - 1)


class MeanEncoder(nn.Module):
    """The baselines' own item table: a user is the mean of their history's item vectors, trained with the
    same next-block sampled softmax as M3 (YouTube-DNN style), so ``average`` and ``multi`` compare user
    representations over embeddings learned for them rather than borrowed from M3.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> enc = MeanEncoder(n_items=20, dim=4)
        >>> user, gate = enc(torch.tensor([[0, 2, 3]]), torch.tensor([[0, 1, 2]]), torch.tensor([3]))
        >>> bool(torch.allclose(user[0], enc.items.weight[[2, 3]].mean(0))), tuple(gate.shape)
        (True, (1, 1))
    """

    def __init__(self, *, n_items: int, dim: int = 64, sparse: bool = False) -> None:
        super().__init__()
        self.n_items, self.dim = n_items, dim
        self.items = nn.Embedding(n_items, dim, padding_idx=0, sparse=sparse)
        nn.init.normal_(self.items.weight, std=0.1)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(
        self, items: torch.Tensor, gaps: torch.Tensor, ctx_gap: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (items > 0).unsqueeze(-1).float()  # (B, L, 1)
        user = (self.items(items) * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, D)
        return user, torch.ones(len(items), 1)  # a single range: the gate is trivially 1

    def item_vectors(self) -> torch.Tensor:
        return self.items.weight[1:]  # (n_items - 1, D)

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        return self.items(items + 1)  # (n, D), as M3.item_rows

    def score(self, user: torch.Tensor) -> torch.Tensor:
        return user @ self.item_vectors().T  # (B, n_items - 1)
