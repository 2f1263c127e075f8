"""One PNG per data set: mean learning curve ± std over seeds for every arm, random dashed, the 95% target line."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on the benchmark machine
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from bench.active_learning.metrics import TARGET_FRACTION  # noqa: E402

# A fixed colour per strategy, so a strategy looks the same in every plot; random is the black dashed line.
COLOURS = {"random": "black", "least_confident": "tab:blue", "margin": "tab:orange", "entropy": "tab:green",
           "qbc_vote_entropy": "tab:red", "qbc_kl": "tab:purple", "density_margin": "tab:brown", "bald": "tab:pink",
           "ranked_batch": "tab:olive", "kcenter": "tab:cyan", "kmeans_pp": "tab:gray"}


def _colour(strategy: str) -> str:
    return COLOURS.get(strategy, "darkgoldenrod")


def plot_dataset(path: Path, title: str, summary: dict) -> None:
    """Write the data set's learning curves: one panel per estimator."""
    labels = np.array(summary["labels"])
    estimators = list(dict.fromkeys(arm["estimator"] for arm in summary["arms"].values()))
    fig, axes = plt.subplots(1, len(estimators), figsize=(9.5 * len(estimators), 5.2), squeeze=False)
    for ax, estimator in zip(axes[0], estimators):
        for key, arm in summary["arms"].items():
            if arm["estimator"] != estimator or not arm["curve_mean"]:
                continue
            strategy = key.partition("/")[0]
            mean, std = np.array(arm["curve_mean"]), np.array(arm["curve_std"])
            style = {"linestyle": "--", "linewidth": 2.2} if strategy == "random" else {"linewidth": 1.4}
            ax.plot(labels, mean, color=_colour(strategy), label=f"{strategy} (AULC {arm['aulc_mean']:.3f})",
                    **style)
            ax.fill_between(labels, mean - std, mean + std, color=_colour(strategy), alpha=0.12, linewidth=0)
        full = summary["full_accuracy"].get(estimator, {})
        if full.get("mean") is not None:
            ax.axhline(full["mean"], color="grey", linewidth=0.8, linestyle=":",
                       label=f"full-data accuracy {full['mean']:.3f}")
            ax.axhline(full["target"], color="firebrick", linewidth=1.0, linestyle="-.",
                       label=f"{TARGET_FRACTION:.0%} of full-data accuracy ({full['target']:.3f})")
        ax.set_title(f"{title}: {estimator}", fontsize=11)
        ax.set_xlabel("labels (seed set + queried)")
        ax.set_ylabel("test accuracy")
        ax.set_xlim(labels[0], labels[-1])
        low = min(min(np.array(a["curve_mean"]) - np.array(a["curve_std"])) for a in summary["arms"].values()
                  if a["estimator"] == estimator and a["curve_mean"])
        ax.set_ylim(max(0.0, low - 0.02), 1.0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes: never over a curve
    fig.suptitle(f"mean ± std over {len(summary['seeds'])} seeds", fontsize=9, y=0.995)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
