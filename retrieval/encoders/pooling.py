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
    """MLM -> SPLADE term weights. (B, L) ids and mask -> (B, V).

    For BERT-family heads (``cls.predictions``: a transform, then a linear decoder to the vocabulary) the
    graph avoids every elementwise pass over the (B, L, V) logits but the max itself, which is what ONNX
    Runtime spent most of its time on (an Add for the bias and a Where for the mask, each as large as the
    matrix product):

    - padding positions take the hidden state of their row's first token ([CLS]), a real token: their
      logits repeat logits already in the max, so the max over all L positions is the max over real ones;
    - the decoder's bias is added after the max (max_i (z_ij + b_j) = max_i z_ij + b_j).

    Other MLMs take the plain route: full logits, padding masked to -inf.

    Example (a tiny random BERT; a padded row weighs terms as the same text alone):

    >>> import transformers
    >>> config = transformers.BertConfig(
    ...     vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    ... )
    >>> _ = torch.manual_seed(0)
    >>> head = SpladePooling(transformers.BertForMaskedLM(config).eval())
    >>> ids, mask = torch.tensor([[1, 5, 7, 2], [1, 9, 2, 0]]), torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    >>> weights = head(ids, mask)
    >>> weights.shape
    torch.Size([2, 50])
    >>> torch.allclose(weights[1], head(ids[1:, :3], mask[1:, :3])[0], atol=1e-6)
    True
    """

    def __init__(self, mlm: torch.nn.Module) -> None:
        super().__init__()
        self.mlm = mlm
        predictions = getattr(getattr(mlm, "cls", None), "predictions", None)
        decoder = getattr(predictions, "decoder", None)
        self.bert_head = isinstance(decoder, torch.nn.Linear) and hasattr(predictions, "transform")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        real = attention_mask.unsqueeze(-1).bool()  # (B, L, 1)
        if self.bert_head:
            out = self.mlm.base_model(input_ids=input_ids, attention_mask=attention_mask)
            states = out.last_hidden_state  # (B, L, H)
            states = torch.where(real, states, states[:, :1, :])  # padding repeats [CLS] (B, L, H)
            head = self.mlm.cls.predictions
            hidden = head.transform(states)  # (B, L, H)
            logits = torch.matmul(hidden, head.decoder.weight.t())  # (B, L, V), no bias yet
            best = logits.amax(dim=1)  # (B, V)
            if head.decoder.bias is not None:
                best = best + head.decoder.bias  # (B, V)
        else:
            logits = self.mlm(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, L, V)
            best = logits.masked_fill(~real, float("-inf")).amax(dim=1)  # (B, V)
        # max_i log1p(relu(z_ij)) == log1p(relu(max_i z_ij)): both are monotone, so reduce first (B, V).
        return torch.log1p(torch.relu(best))


class MeanPooling(torch.nn.Module):
    """Token states -> mean over real tokens -> unit vector. (B, L) ids and mask -> (B, H).

    >>> import transformers
    >>> config = transformers.BertConfig(
    ...     vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16
    ... )
    >>> _ = torch.manual_seed(0)
    >>> head = MeanPooling(transformers.BertModel(config).eval())
    >>> vectors = head(torch.tensor([[1, 5, 2, 0]]), torch.tensor([[1, 1, 1, 0]]))
    >>> vectors.shape, round(float(vectors.norm()), 4)
    (torch.Size([1, 8]), 1.0)
    """

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        states = out.last_hidden_state  # (B, L, H)
        mask = attention_mask.unsqueeze(-1).to(states.dtype)  # (B, L, 1)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # (B, H)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)
