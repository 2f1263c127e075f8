"""Reads of the machine side, free of scikit-learn imports."""
from __future__ import annotations

from annotate.models import Project
from learners.models import ModelVersion

# Bloodgood and Vijay-Shanker (2009): stop when the mean kappa of the last 3 comparisons reaches 0.99.
STOP_WINDOW = 3
STOP_KAPPA = 0.99


def model_version_latest(project: Project) -> ModelVersion | None:
    return project.model_versions.defer("artifact", "stop_set").order_by("-number").first()


def stopping_signal(project: Project) -> dict:
    """Whether successive models still change their predictions on the fixed stop set (JSON-able)."""
    versions = list(project.model_versions.defer("artifact", "stop_set").order_by("-number")[:STOP_WINDOW])
    kappas = [v.metrics.get("stop_kappa") for v in versions if v.metrics.get("stop_kappa") is not None]
    signal = {
        "window": STOP_WINDOW, "threshold": STOP_KAPPA,
        "kappas": kappas,  # newest first
        "mean_kappa": round(sum(kappas) / len(kappas), 4) if kappas else None,
        "stable": len(kappas) == STOP_WINDOW and sum(kappas) / len(kappas) >= STOP_KAPPA,
    }
    if signal["stable"]:
        signal["message"] = "The model has stopped changing: further labels add little."
    elif len(kappas) < STOP_WINDOW:
        signal["message"] = (
            f"Not enough model versions to judge yet ({len(kappas)} of {STOP_WINDOW} comparisons)."
        )
    else:
        signal["message"] = "The model is still changing its predictions; labels are still informative."
    return signal
