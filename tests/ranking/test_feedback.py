"""Policy-aware click weights for candidate lists."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.feedback import policy_aware_weights

THETA = (1.0, 0.5, 0.25)


def test_weights_undo_placement_and_examination() -> None:
    weights = policy_aware_weights(
        click=np.array([1, 1, 0, 0, 1]),
        position=np.array([1, 3, 2, 0, 2]),
        # the policy's own top block; a block only a randomized page shows (1/40 per position of 8);
        # an unclicked shown block; an unshown candidate; a clicked block shown for sure at position 2
        propensity=np.array([0.9, 0.025, 0.9, 0.0, 1.0]),
        examination=THETA,
        page_size=8,
        clip=100.0,
    )
    np.testing.assert_allclose(weights, [1.0, 1 / (0.2 * 0.25), 1.0, 1.0, 2.0], rtol=1e-6)


def test_weights_are_clipped_and_positive() -> None:
    weights = policy_aware_weights(
        click=np.array([1]),
        position=np.array([3]),
        propensity=np.array([0.001]),
        examination=THETA,
        page_size=8,
        clip=10.0,
    )
    assert weights[0] == pytest.approx(10.0)


def test_a_click_without_a_position_is_refused() -> None:
    with pytest.raises(ValueError, match="position"):
        policy_aware_weights(
            click=np.array([1]),
            position=np.array([0]),
            propensity=np.array([0.0]),
            examination=THETA,
            page_size=8,
            clip=10.0,
        )
