"""The random-sampling baseline from the last active-learning benchmark (bench/active_learning).

The benchmark measured test accuracy on a held-out 30% split while a
simulated oracle labelled the pool; a project's model versions report
cross-validated accuracy on the project's own labels. The two are comparable
in shape (how fast accuracy climbs with labels), not point for point.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings

RESULTS_PATH = Path("bench") / "active_learning" / "results.json"


@dataclass(frozen=True)
class Baseline:
    dataset: str
    title: str
    labels: list[int]  # labelled items (one oracle label each)
    accuracy: list[float]  # mean test accuracy over the seeds
    accuracy_std: list[float]
    arm: str
    estimator: str
    featuriser: str
    seeds: int
    benchmark_date: str


def results_path() -> Path:
    return Path(settings.BASE_DIR) / RESULTS_PATH


@lru_cache(maxsize=4)
def _results_load(path: str, mtime_ns: int) -> dict:
    """The parsed results file (600 kB), parsed again only when it changes (the mtime is part of the key)."""
    return json.loads(Path(path).read_text())


def random_baseline(dataset: str, *, path: Path | None = None, arm: str = "random") -> Baseline | None:
    """The `arm` curve (random sampling by default) of `dataset` in the benchmark results.

    None when `dataset` is empty, or the results file, the data set or the arm
    is absent: a project without a matching benchmark simply has no baseline.
    A file that exists but is not the benchmark's JSON raises (ValueError or
    KeyError), since that is a broken checkout, not a missing baseline.
    """
    if not dataset:
        return None
    path = results_path() if path is None else path
    try:
        results = _results_load(str(path), path.stat().st_mtime_ns)
    except FileNotFoundError:
        return None
    summary = results["summary"].get(dataset)
    if summary is None or arm not in summary["arms"]:
        return None
    curve = summary["arms"][arm]
    labels = [int(n) for n in summary["labels"]]
    mean, std = curve["curve_mean"], curve.get("curve_std") or [0.0] * len(labels)
    if not (len(labels) == len(mean) == len(std)):
        raise ValueError(f"{path}: {dataset}/{arm} has {len(labels)} label counts but {len(mean)} accuracies")
    info = results.get("datasets", {}).get(dataset, {})
    return Baseline(
        dataset=dataset, title=info.get("title", dataset), labels=labels,
        accuracy=[float(v) for v in mean], accuracy_std=[float(v) for v in std], arm=arm,
        estimator=curve.get("estimator", ""), featuriser=info.get("featuriser", ""),
        seeds=int(curve.get("seeds", len(summary.get("seeds", [])))), benchmark_date=str(results.get("date", "")),
    )
