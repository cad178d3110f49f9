"""The shared Adam: torch's fused kernel, stepping as the reference implementation does."""

from __future__ import annotations

import pytest
import torch

from data.torch_optim import adam


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_fused_adam_steps_as_the_reference_adam(weight_decay: float) -> None:
    torch.manual_seed(0)
    shapes = [(300, 16), (16, 16), (16,)]
    fused = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in fused]
    initial = [p.detach().clone() for p in fused]
    ours = adam(fused, lr=3e-3, weight_decay=weight_decay)
    theirs = torch.optim.Adam(reference, lr=3e-3, weight_decay=weight_decay, foreach=False)
    assert ours.defaults["fused"] and not theirs.defaults["fused"]
    for _ in range(20):
        grads = [torch.randn(s) for s in shapes]
        for params, opt in ((fused, ours), (reference, theirs)):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
    for a, b, start in zip(fused, reference, initial, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
        assert (a - start).abs().max() > 1e-2  # 20 steps of 3e-3 moved every tensor
