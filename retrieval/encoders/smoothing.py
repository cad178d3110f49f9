"""Smoothing of a transformer's feed-forward input products before int8 export (SmoothQuant's migration).

In: the pooled torch module (fp32, eval) and its tokenizer; a migration strength alpha in (0, 1].
Out: the same module, each layer's feed-forward input product (``intermediate.dense``) now computing
``(x / s) @ (s * W)``, the same function in fp32.

Why: the input of that product is a layer norm's output, and in all-MiniLM-L6-v2 a few of its 384 channels
run 13-15x the median channel's range (the same channels in every layer). int8 runs quantise an activation
with one scale per tensor, chosen at run time, so those few channels spend the steps the others need; the
weights are quantised per output channel ahead of time. Scaling an input channel's weights up widens every
output channel's range a little; the scale ``s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)`` (Xiao et al.,
2022) splits each channel's range between the two. (Scales rounded to powers of two, exact in fp32, cost
CISI's dense recall@100 0.023 against torch, outside the quality tests' 0.01: not kept; docs/retrieval.md.)
The ranges are measured on ``calibration.txt``, general text shipped beside this module, so an export
depends on the checkpoint and this package only (the export cache and the index identity carry a digest of
both files: ``onnx_export.SMOOTHING_FILES``).

Only the feed-forward input is smoothed. The attention's input ranges are 3-5x the median, and smoothing the
feed-forward output product (after GELU) cost fidelity here; docs/retrieval.md has the measurements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CALIBRATION = Path(__file__).with_name("calibration.txt")
FEED_FORWARD_IN = "intermediate.dense"  # the BERT family's name for a layer's first feed-forward product
CALIBRATION_MAX_LENGTH = 256


class ScaledInput(torch.nn.Module):
    """``linear`` applied to ``x / scale``, its weight's input columns multiplied by ``scale``."""

    def __init__(self, linear: torch.nn.Linear, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("inverse", (1.0 / scale).to(linear.weight.dtype))
        with torch.no_grad():
            linear.weight.mul_(scale.to(linear.weight.dtype)[None, :])
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inverse)


def calibration_texts(path: Path = CALIBRATION) -> list[str]:
    """One text per non-empty line."""
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def feed_forward_inputs(module: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    """Each layer's feed-forward input product, by its name in ``module``."""
    return {
        name: m
        for name, m in module.named_modules()
        if name.endswith(FEED_FORWARD_IN) and isinstance(m, torch.nn.Linear)
    }


def input_ranges(
    module: torch.nn.Module, tokenizer: Any, linears: dict[str, torch.nn.Linear], texts: list[str]
) -> dict[str, torch.Tensor]:
    """The largest |input| each of ``linears`` sees per input channel, over ``texts`` run one at a time
    (as int8 encoding runs them: no padding)."""
    ranges: dict[str, torch.Tensor] = {}

    def record(name: str) -> Any:
        def hook(_: torch.nn.Module, inputs: tuple[torch.Tensor, ...], __: torch.Tensor) -> None:
            seen = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0)
            ranges[name] = torch.maximum(ranges[name], seen) if name in ranges else seen

        return hook

    handles = [linear.register_forward_hook(record(name)) for name, linear in linears.items()]
    try:
        with torch.inference_mode():
            for text in texts:
                batch = tokenizer(
                    [text], return_tensors="pt", truncation=True, max_length=CALIBRATION_MAX_LENGTH
                )
                module(batch["input_ids"], batch["attention_mask"])
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def smooth_feed_forward(module: torch.nn.Module, tokenizer: Any, alpha: float) -> int:
    """Smooth every feed-forward input product of ``module`` in place; returns how many were smoothed.

    Raises ValueError when ``module`` has none (an architecture that names them otherwise): its int8 export
    runs with ``smoothing: 0``.
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"smoothing strength {alpha} is outside (0, 1]")
    linears = feed_forward_inputs(module)
    if not linears:
        raise ValueError(
            f"no feed-forward product named '*{FEED_FORWARD_IN}' to smooth in this checkpoint: the int8 "
            "refinements name BERT's products; set the encoder's smoothing: 0 and fp32_feed_forward_out: []"
        )
    ranges = input_ranges(module, tokenizer, linears, calibration_texts())
    for name, linear in linears.items():
        weights = linear.weight.detach().abs().amax(dim=0)  # (in,): torch keeps (out, in)
        # Clamped: a channel no calibration text reached (or a zero weight column) keeps a finite scale.
        scale = ranges[name].clamp(min=1e-5) ** alpha / weights.clamp(min=1e-5) ** (1.0 - alpha)
        parent, _, attribute = name.rpartition(".")
        setattr(module.get_submodule(parent), attribute, ScaledInput(linear, scale))
    return len(linears)
