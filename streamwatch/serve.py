"""What a stream is scored against: the better of its model's forecast and persistence, with
a scale recalibrated online so that its 90 % interval covers 90 % of readings (pure).

Per stream and target, beside the LSTM state, five numbers (``ROWS``): the model's own
forecast of this reading, the previous reading, the running mean absolute error of each of
the two forecasts (exponentially weighted over ``MEMORY`` readings), and the factor by which
the model's scale is multiplied.  At each reading:

1. both errors are updated with it;
2. the forecast served for the next reading is the model's while its running error is
   smaller than persistence's, and the reading itself (persistence) otherwise: causally, per
   stream, so a stream the model cannot forecast is judged against the better forecast;
3. the scale factor moves up when the reading fell outside the served 90 % interval and down
   when inside, by amounts that balance at 10 % outside (a stochastic-approximation quantile
   tracker: ``c *= exp(RATE * (outside - 0.1))``).

>>> rows = new_rows(1, 1)
>>> served, scale = step(rows, np.array([[1.0]]), np.array([[1.5]]), np.array([[0.1]]), 1)
>>> served.tolist(), rows[0, :, 0].tolist()[:2]  # no errors seen yet: persistence
([[1.0]], [1.5, 1.0])
"""

from __future__ import annotations

import numpy as np

MODEL, PREVIOUS, MODEL_ERR, PERSIST_ERR, FACTOR = range(5)
ROWS = 5
MEMORY = 100  # readings over which the two forecasts' errors are compared
RATE = 0.02  # of the scale factor's log per reading
Z90 = 1.6448536269514722  # half-width of the central 90 % interval of a standard normal
FACTOR_BOUNDS = (0.05, 20.0)


def new_rows(n: int, n_targets: int) -> np.ndarray:
    rows = np.zeros((n, ROWS, n_targets))
    reset(rows)
    return rows


def reset(rows: np.ndarray) -> None:
    rows[:, MODEL] = rows[:, PREVIOUS] = np.nan
    rows[:, MODEL_ERR] = rows[:, PERSIST_ERR] = 0.0
    rows[:, FACTOR] = 1.0


def step(
    rows: np.ndarray,
    x: np.ndarray,
    model_next: np.ndarray,
    model_scale: np.ndarray,
    count: np.ndarray | int,
    served_prev: np.ndarray | None = None,
    scale_prev: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Take readings ``x`` (n, targets) into ``rows`` (n, ROWS, targets), in place, given the
    model's forecast of the next reading and its scale, and ``count`` readings of each stream
    so far (this one included); return the forecast and scale to serve for the next reading.
    ``served_prev`` and ``scale_prev``: what was served for this reading (for calibration)."""
    with np.errstate(invalid="ignore"):
        m_err = np.abs(x - rows[:, MODEL])
        p_err = np.abs(x - rows[:, PREVIOUS])
        seen = np.isfinite(m_err) & np.isfinite(p_err)
        alpha = 1.0 / np.minimum(np.maximum(np.asarray(count, np.float64) - 1.0, 1.0), MEMORY)
        alpha = np.broadcast_to(np.reshape(alpha, (-1, 1)) if np.ndim(alpha) else alpha, x.shape)
        for col, err in ((MODEL_ERR, m_err), (PERSIST_ERR, p_err)):
            now = rows[:, col]
            rows[:, col] = np.where(seen, now + alpha * (err - now), now)
        if served_prev is not None and scale_prev is not None:
            outside = np.abs(x - served_prev) > Z90 * scale_prev
            judged = np.isfinite(served_prev) & np.isfinite(scale_prev)
            factor = rows[:, FACTOR] * np.exp(RATE * (outside - 0.1))
            rows[:, FACTOR] = np.where(judged, np.clip(factor, *FACTOR_BOUNDS), rows[:, FACTOR])
    rows[:, MODEL] = model_next
    rows[:, PREVIOUS] = x
    # strictly better: a stream starts on persistence, and takes the model once it has shown
    # a smaller error (its first forecasts come from a state that knows little)
    use_model = rows[:, MODEL_ERR] < rows[:, PERSIST_ERR]
    served = np.where(use_model, model_next, x)
    return served, model_scale * rows[:, FACTOR]
