"""The served forecast falls back to persistence where the model does worse."""

from __future__ import annotations

import numpy as np

from streamwatch import serve


def _run(x: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Feed one stream: model[t] is the model's forecast of x[t+1], made at x[t]; returns the
    forecasts served for x[1:]."""
    rows = serve.new_rows(1, 1)
    served = [serve.step(rows, np.array([[x[t]]]), np.array([[model[t]]]), t + 1)[0, 0]
              for t in range(len(x))]  # fmt: skip
    return np.array(served[:-1])


def test_a_model_worse_than_persistence_is_passed_over() -> None:
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(0, 1, 2000))  # a random walk: persistence is optimal
    bad = x + rng.normal(0, 3, 2000)  # a model that adds noise to it
    served = _run(x, bad)
    late = slice(200, None)
    np.testing.assert_array_equal(served[late], x[:-1][late])  # persistence, every time
    good = np.r_[x[1:], x[-1]] + rng.normal(0, 0.1, 2000)  # a model that nearly knows
    served = _run(x, good)
    np.testing.assert_array_equal(served[late], good[:-1][late])


def test_rows_reset_to_no_history() -> None:
    rows = serve.new_rows(2, 3)
    assert rows.shape == (2, serve.ROWS, 3)
    assert np.isnan(rows[:, serve.MODEL]).all() and (rows[:, serve.MODEL_ERR] == 0.0).all()


def test_a_snapshot_from_before_the_serve_rows_restores_with_fresh_ones() -> None:
    from streamwatch.state import StateStore

    store = StateStore(state_size=4, n_targets=1)
    slots = store.assign(["a", "b"], now=0.0)
    store.serve[slots, serve.MODEL_ERR] = 3.0
    rows = store.export()
    del rows["serve"]  # what a snapshot written before this release holds
    again = StateStore(state_size=4, n_targets=1)
    assert again.add(rows, owner=0, now=1.0) == 2
    back = again.serve[[again.slot("a"), again.slot("b")]]
    assert (back[:, serve.MODEL_ERR] == 0.0).all() and np.isnan(back[:, serve.MODEL]).all()
