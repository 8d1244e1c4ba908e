"""What a stream is scored against: the better of its model's forecast and persistence (pure).

Per stream and target, beside the LSTM state, four numbers (``ROWS``): the model's own
forecast of this reading, the previous reading, and the running mean absolute error of each
of the two forecasts (exponentially weighted over ``MEMORY`` readings).  At each reading both
errors are updated with it, and the forecast served for the next reading is the model's while
its running error is smaller than persistence's, and the reading itself (persistence)
otherwise: causally, per stream, so a stream the model cannot forecast is judged against the
better forecast.  A stream starts on persistence and takes the model once it has shown a
smaller error (its first forecasts come from a state that knows little).  The scale served
is the model's either way: it is what the scorer's tests were built on.

>>> rows = new_rows(1, 1)
>>> step(rows, np.array([[1.0]]), np.array([[1.5]]), 1).tolist()  # no errors yet: persistence
[[1.0]]
>>> rows[0, :, 0].tolist()
[1.5, 1.0, 0.0, 0.0]
"""

from __future__ import annotations

import numpy as np

MODEL, PREVIOUS, MODEL_ERR, PERSIST_ERR = range(4)
ROWS = 4
MEMORY = 100  # readings over which the two forecasts' errors are compared


def new_rows(n: int, n_targets: int) -> np.ndarray:
    rows = np.zeros((n, ROWS, n_targets))
    reset(rows)
    return rows


def reset(rows: np.ndarray) -> None:
    rows[:, MODEL] = rows[:, PREVIOUS] = np.nan
    rows[:, MODEL_ERR] = rows[:, PERSIST_ERR] = 0.0


def step(
    rows: np.ndarray, x: np.ndarray, model_next: np.ndarray, count: np.ndarray | int
) -> np.ndarray:
    """Take readings ``x`` (n, targets) into ``rows`` (n, ROWS, targets), in place, given the
    model's forecast of the next reading and ``count`` readings of each stream so far (this
    one included); return the forecast to serve for the next reading."""
    with np.errstate(invalid="ignore"):
        m_err = np.abs(x - rows[:, MODEL])
        p_err = np.abs(x - rows[:, PREVIOUS])
    seen = np.isfinite(m_err) & np.isfinite(p_err)
    # 1/n while fewer than MEMORY errors are in, then a fixed weight
    n_err = np.maximum(np.asarray(count, np.float64) - 1.0, 1.0)
    alpha = 1.0 / np.minimum(n_err, MEMORY)
    if np.ndim(alpha):
        alpha = alpha.reshape(-1, 1)
    for col, err in ((MODEL_ERR, m_err), (PERSIST_ERR, p_err)):
        now = rows[:, col]
        rows[:, col] = np.where(seen, now + alpha * (err - now), now)
    rows[:, MODEL] = model_next
    rows[:, PREVIOUS] = x
    return np.where(rows[:, MODEL_ERR] < rows[:, PERSIST_ERR], model_next, x)
