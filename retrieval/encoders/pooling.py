"""The pooling heads put inside the exported ONNX graphs (torch modules; importing this imports torch).

- ``SpladePooling``: ``w_j = log(1 + relu(max_i z_ij))`` over the real tokens i of the MLM logits z,
  D = vocabulary size (30,522 for splade-tiny);
- ``MeanPooling``: the mean of the token states over real tokens, L2-normalised, D = hidden size (384 for
  all-MiniLM-L6-v2).

The dense torch backend runs ``MeanPooling`` itself. SPLADE's torch backend keeps its own reference code in
``splade.py``: it runs the vocabulary head on real tokens only, which does not trace to a graph with dynamic
shapes. Tests check that every backend agrees with torch.
"""

from __future__ import annotations

import torch


class SpladePooling(torch.nn.Module):
    """MLM logits -> SPLADE term weights. (B, L) ids and mask -> (B, V)."""

    def __init__(self, mlm: torch.nn.Module) -> None:
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, L, V)
        padding = (attention_mask == 0).unsqueeze(-1)  # (B, L, 1)
        # max_i log1p(relu(z_ij)) == log1p(relu(max_i z_ij)): both are monotone, so reduce first (B, V).
        best = logits.masked_fill(padding, float("-inf")).amax(dim=1)  # (B, V)
        return torch.log1p(torch.relu(best))


class MeanPooling(torch.nn.Module):
    """Token states -> mean over real tokens -> unit vector. (B, L) ids and mask -> (B, H)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        states = out.last_hidden_state  # (B, L, H)
        mask = attention_mask.unsqueeze(-1).to(states.dtype)  # (B, L, 1)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, H)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)
