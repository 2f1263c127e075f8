"""Reads of the machine side, free of scikit-learn imports."""
from __future__ import annotations

from annotate.models import Project
from learners.models import ModelVersion


def model_version_latest(project: Project) -> ModelVersion | None:
    return project.model_versions.defer("artifact").order_by("-number").first()
