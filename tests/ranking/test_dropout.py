"""The towers' dropout: the rate asked for, the mean kept, nothing in evaluation, repeatable under a seed."""

from __future__ import annotations

import pytest
import torch

from ranking.nn.layers import Dropout, feed_forward


@pytest.mark.parametrize("p", [0.1, 0.2, 0.3])
def test_drops_the_rate_asked_for_and_keeps_the_mean(p: float) -> None:
    torch.manual_seed(0)
    x = torch.ones(1000, 1000)
    y = Dropout(p).train()(x)
    dropped = float((y == 0).float().mean())
    # One million units: the rate's standard error is below 0.0005.
    assert dropped == pytest.approx(p, abs=0.002)
    assert float(y.mean()) == pytest.approx(1.0, abs=0.003)
    zero, kept = torch.unique(y).tolist()
    assert zero == 0.0 and kept == pytest.approx(1 / (1 - p), rel=1e-4)


def test_is_the_identity_in_evaluation_and_at_zero() -> None:
    x = torch.randn(64, 32)
    assert torch.equal(Dropout(0.3).eval()(x), x)
    assert Dropout(0.0).train()(x) is x


def test_a_seed_repeats_the_mask_and_gradients_flow_through_kept_units() -> None:
    x = torch.randn(256, 64, requires_grad=True)
    torch.manual_seed(7)
    a = Dropout(0.2).train()(x)
    torch.manual_seed(7)
    b = Dropout(0.2).train()(x)
    assert torch.equal(a, b)
    a.sum().backward()
    kept = a.detach() != 0
    assert torch.allclose(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.8))
    assert (x.grad[~kept] == 0).all()


def test_towers_keep_their_parameter_names() -> None:
    """Saved towers (state-dict keys) load into the same module positions as before the swap."""
    tower, _ = feed_forward(8, [16, 4], 0.1)
    assert list(tower.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)
