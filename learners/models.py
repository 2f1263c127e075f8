"""Model versions: every retrain of a project stores one, with honest metrics."""
from __future__ import annotations

from django.db import models

from annotate.models import Project


class ModelVersion(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField()
    # The retrain request this version answers (the Celery task id by default):
    # a redelivered request finds its version instead of training twice.
    request_id = models.CharField(max_length=64)
    estimator = models.CharField(max_length=64)
    query_strategy = models.CharField(max_length=64)
    trained_on = models.PositiveIntegerField(help_text="Labelled items used for training.")
    label_count = models.PositiveIntegerField(help_text="The project's human label count at training time.")
    metrics = models.JSONField(default=dict)
    artifact = models.BinaryField(help_text="The fitted estimator, pickled with joblib.")
    items_scored = models.PositiveIntegerField(default=0)
    train_seconds = models.FloatField(default=0.0)
    score_seconds = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="modelversion_unique_number"),
            models.UniqueConstraint(fields=["project", "request_id"], name="modelversion_unique_request"),
        ]

    def __str__(self) -> str:
        return f"{self.project} v{self.number}"
