"""Learning-curve metrics and their mean ± std over seeds, per data set and arm.

Definitions (RESULTS.md repeats them):

- accuracy: share of the test split predicted right by the arm's estimator
  trained on the labels acquired so far;
- normalised AULC: the trapezoid area under accuracy vs number of labels, from
  the seed set to the budget, divided by that label range, i.e. the curve's
  mean accuracy over the label range (1.0 = perfect from the first label);
- full-data accuracy: the same estimator trained on the whole pool, same seed
  and test split;
- labels to target: the first measured label count at which accuracy is at
  least `TARGET_FRACTION` x full-data accuracy (of that seed); not reached
  within the budget counts as not reached (never as the budget);
- ratio: an arm's mean labels to target over random's (with the same
  estimator), when every seed of both reached it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

TARGET_FRACTION = 0.95
SAVES_LABELS_RATIO = 0.6


def aulc(labels: list[int], accuracy: list[float]) -> float:
    """Trapezoid area under accuracy vs labels divided by the label range: mean accuracy over that range."""
    span = labels[-1] - labels[0]
    if span <= 0:
        return float(accuracy[0])
    return float(np.trapezoid(accuracy, labels) / span)


def labels_to_reach(labels: list[int], accuracy: list[float], target: float) -> int | None:
    """The first label count whose accuracy is at least `target`; None when the curve never gets there."""
    for count, value in zip(labels, accuracy):
        if value >= target:
            return int(count)
    return None


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values))


def baseline_key(key: str) -> str:
    """The random-sampling arm an arm is compared with: random with the same estimator."""
    _, _, estimator = key.partition("/")
    return f"random/{estimator}" if estimator else "random"


def summarise(jobs: list[dict]) -> dict:
    """Per data set: full-data accuracy, then per arm the curves' mean/std and the metrics above."""
    by_dataset: dict[str, list[dict]] = {}
    for job in jobs:
        by_dataset.setdefault(job["dataset"], []).append(job)
    summary: dict[str, Any] = {}
    for dataset, dataset_jobs in by_dataset.items():
        dataset_jobs.sort(key=lambda j: j["seed"])
        labels = dataset_jobs[0]["labels"]
        full: dict[str, dict] = {}
        for estimator in sorted({e for j in dataset_jobs for e in j["full_accuracy"]}):
            values = [j["full_accuracy"][estimator] for j in dataset_jobs
                      if j["full_accuracy"].get(estimator) is not None]
            mean, std = _mean_std(values)
            full[estimator] = {"mean": mean, "std": std, "target": None if mean is None else TARGET_FRACTION * mean}
        arms: dict[str, dict] = {}
        for key in dict.fromkeys(k for j in dataset_jobs for k in j["arms"]):
            arms[key] = _summarise_arm(key, dataset_jobs, labels)
        for key, arm in arms.items():
            _compare_with_baseline(arm, arms.get(baseline_key(key)), labels[-1])
        summary[dataset] = {"labels": labels, "budget": labels[-1], "seeds": [j["seed"] for j in dataset_jobs],
                            "full_accuracy": full, "arms": arms, "best": _best_arm(arms)}
    return summary


def _summarise_arm(key: str, jobs: list[dict], labels: list[int]) -> dict:
    estimator = key.partition("/")[2] or "logistic_regression"
    per_seed: dict[int, dict] = {}
    errors: dict[int, str] = {}
    for job in jobs:
        curve = job["arms"].get(key)
        if curve is None:
            continue
        if "error" in curve:
            errors[job["seed"]] = curve["error"].strip().splitlines()[-1]
            continue
        full = job["full_accuracy"].get(estimator)
        target = None if full is None else TARGET_FRACTION * full
        per_seed[job["seed"]] = {
            "aulc": aulc(labels, curve["accuracy"]),
            "final": curve["accuracy"][-1],
            "labels_to_target": None if target is None else labels_to_reach(labels, curve["accuracy"], target),
            "seconds": curve["seconds"], "query_seconds": curve["query_seconds"],
        }
    curves = np.array([job["arms"][key]["accuracy"] for job in jobs if job["seed"] in per_seed])
    reached = [s["labels_to_target"] for s in per_seed.values() if s["labels_to_target"] is not None]
    all_reached = bool(per_seed) and len(reached) == len(per_seed)
    aulc_mean, aulc_std = _mean_std([s["aulc"] for s in per_seed.values()])
    final_mean, final_std = _mean_std([s["final"] for s in per_seed.values()])
    labels_mean, labels_std = _mean_std(reached) if all_reached else (None, None)
    return {
        "estimator": estimator, "seeds": len(per_seed), "errors": errors,
        "curve_mean": curves.mean(axis=0).tolist() if len(curves) else [],
        "curve_std": curves.std(axis=0).tolist() if len(curves) else [],
        "aulc_mean": aulc_mean, "aulc_std": aulc_std, "final_mean": final_mean, "final_std": final_std,
        "reached": len(reached), "labels_mean": labels_mean, "labels_std": labels_std,
        "seconds_mean": _mean_std([s["seconds"] for s in per_seed.values()])[0],
        "query_seconds_mean": _mean_std([s["query_seconds"] for s in per_seed.values()])[0],
        "per_seed": per_seed,
    }


def _compare_with_baseline(arm: dict, baseline: dict | None, budget: int) -> None:
    """Labels ratio, paired AULC difference and the verdict against random with the same estimator."""
    arm.update({"ratio": None, "ratio_is_upper_bound": False, "aulc_delta_mean": None, "aulc_delta_std": None,
                "seeds_won": None, "seeds_fewer_labels": None, "beats_random": None})
    if baseline is None or not baseline["per_seed"] or not arm["per_seed"]:
        return
    shared = sorted(set(arm["per_seed"]) & set(baseline["per_seed"]))
    deltas = [arm["per_seed"][s]["aulc"] - baseline["per_seed"][s]["aulc"] for s in shared]
    arm["aulc_delta_mean"], arm["aulc_delta_std"] = _mean_std(deltas)
    arm["seeds_won"] = sum(1 for d in deltas if d > 0)
    arm["seeds_compared"] = len(shared)
    # Paired: in how many seeds the arm reached the target with fewer labels than random (not reaching = worst).
    never = budget + 1
    arm["seeds_fewer_labels"] = sum(
        1 for s in shared
        if (arm["per_seed"][s]["labels_to_target"] or never) < (baseline["per_seed"][s]["labels_to_target"] or never))
    if arm["labels_mean"] is not None and baseline["labels_mean"] is not None:
        arm["ratio"] = arm["labels_mean"] / baseline["labels_mean"]
    elif arm["labels_mean"] is not None:
        # Random never got there (in some seed): the ratio is at most arm / budget.
        arm["ratio"] = arm["labels_mean"] / budget
        arm["ratio_is_upper_bound"] = True
    fewer_labels = arm["ratio"] is not None and (arm["ratio"] < 1 or arm["ratio_is_upper_bound"])
    arm["beats_random"] = bool(deltas) and arm["aulc_delta_mean"] > 0 and fewer_labels


def _best_arm(arms: dict[str, dict]) -> dict | None:
    """The non-random arm with the lowest labels ratio (ties: higher AULC)."""
    candidates = [(arm["ratio"], -(arm["aulc_mean"] or 0.0), key) for key, arm in arms.items()
                  if not key.startswith("random") and arm.get("ratio") is not None and not math.isnan(arm["ratio"])]
    if not candidates:
        return None
    ratio, _, key = min(candidates)
    return {"key": key, "ratio": ratio, "ratio_is_upper_bound": arms[key]["ratio_is_upper_bound"],
            "saves_labels": ratio <= SAVES_LABELS_RATIO}
