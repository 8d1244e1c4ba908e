"""Pictures of a replay: per stream, the readings with the forecast band, the score, and the
flagged readings.  Needs matplotlib (the ``plot`` extra); imported only by ``--plot``."""

from __future__ import annotations

from pathlib import Path

from streamwatch.data import Rows
from streamwatch.engine import Verdicts


def plot_replay(
    path: Path | str, rows: Rows, verdicts: Verdicts, threshold: float, max_streams: int = 6
) -> list[str]:
    """Draw up to ``max_streams`` streams into one PNG; return the streams drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = rows.by_stream()
    names = list(groups)[:max_streams]
    fig, axes = plt.subplots(
        2 * len(names),
        1,
        figsize=(14, 3.4 * len(names)),
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1] * len(names)},
    )
    for k, name in enumerate(names):
        idx = groups[name]
        t = rows.timestamps[idx]
        ax, ax_score = axes[2 * k, 0], axes[2 * k + 1, 0]
        pred, scale = verdicts.prediction[idx, 0], verdicts.scale[idx, 0]  # the first target
        ax.fill_between(
            t,
            pred - 3 * scale,
            pred + 3 * scale,
            color="tab:orange",
            alpha=0.25,
            lw=0,
            label="forecast ± 3 scale",
        )
        values = rows.values.reshape(len(rows), -1)[:, 0]
        ax.plot(t, values[idx], lw=0.7, color="tab:blue", label="reading")
        flagged = idx[verdicts.anomaly[idx]]
        ax.scatter(
            rows.timestamps[flagged],
            values[flagged],
            s=14,
            color="red",
            zorder=3,
            label="flagged",
        )
        ax.set_title(name, loc="left")
        ax.legend(loc="upper right", fontsize=7)
        ax_score.plot(t, verdicts.score[idx], lw=0.7, color="tab:purple")
        ax_score.axhline(threshold, color="red", lw=0.6, ls="--")
        ax_score.set_ylim(0, 1.02)
        ax_score.set_ylabel("score")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return names
