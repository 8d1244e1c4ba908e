"""The served forecast falls back to persistence where the model does worse, and the served
scale is recalibrated to cover 90 % of readings."""

from __future__ import annotations

import numpy as np
import pytest

from streamwatch import serve


def _run(x: np.ndarray, model: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Feed one stream: model[t] is the model's forecast of x[t+1], made at x[t]."""
    rows = serve.new_rows(1, 1)
    served, scales = [np.nan], [np.nan]
    for t in range(len(x)):
        f, s = serve.step(
            rows,
            np.array([[x[t]]]),
            np.array([[model[t]]]),
            np.array([[scale]]),
            t + 1,
            np.array([[served[-1]]]),
            np.array([[scales[-1]]]),
        )
        served.append(float(f[0, 0]))
        scales.append(float(s[0, 0]))
    return np.array(served[1:-1]), np.array(scales[1:-1])  # forecasts of x[1:]


def test_a_model_worse_than_persistence_is_passed_over() -> None:
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(0, 1, 2000))  # a random walk: persistence is optimal
    bad = x + rng.normal(0, 3, 2000)  # a model that adds noise to it
    served, _ = _run(x, bad, 1.0)
    late = slice(200, None)
    np.testing.assert_array_equal(served[late], x[:-1][late])  # persistence, every time
    good = np.r_[x[1:], x[-1]] + rng.normal(0, 0.1, 2000)  # a model that nearly knows
    served, _ = _run(x, good, 1.0)
    np.testing.assert_array_equal(served[late], good[:-1][late])


@pytest.mark.parametrize("wrong", [0.2, 1.0, 5.0])
def test_the_scale_is_recalibrated_to_cover_ninety_percent(wrong: float) -> None:
    rng = np.random.default_rng(1)
    n = 20000
    x = rng.standard_t(4, n) * 2.0  # heavy tails, spread 2
    zero = np.zeros(n)  # the model forecasts 0; its scale is off by `wrong`
    served, scales = _run(x, zero, 2.0 * wrong)
    inside = np.abs(x[1:] - served) <= serve.Z90 * scales
    assert inside[5000:].mean() == pytest.approx(0.9, abs=0.015)


def test_rows_reset_to_no_history() -> None:
    rows = serve.new_rows(2, 3)
    assert rows.shape == (2, serve.ROWS, 3)
    assert np.isnan(rows[:, serve.MODEL]).all() and (rows[:, serve.FACTOR] == 1.0).all()


def test_a_snapshot_from_before_the_serve_rows_restores_with_fresh_ones() -> None:
    from streamwatch.state import StateStore

    store = StateStore(state_size=4, n_targets=1)
    slots = store.assign(["a", "b"], now=0.0)
    store.serve[slots, serve.FACTOR] = 3.0
    rows = store.export()
    del rows["serve"]  # what a snapshot written before this release holds
    again = StateStore(state_size=4, n_targets=1)
    assert again.restore(rows, now=1.0) == 2
    back = again.serve[[again.slot("a"), again.slot("b")]]
    assert (back[:, serve.FACTOR] == 1.0).all() and np.isnan(back[:, serve.MODEL]).all()
