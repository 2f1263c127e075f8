"""Data model of the human side.

Counters (`label_count`, `annotation_count`, `lease_count`, `cost_spent`) are
denormalised so the queue can answer from one index scan; they are only ever
changed by the services in `annotate.services`, inside the transaction that
changes the rows they count, with the owning row locked.
"""
from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q


class Modality(models.TextChoices):
    TEXT = "text", "Text"
    TABULAR = "tabular", "Tabular"
    IMAGE = "image", "Image"


class Project(models.Model):
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    modality = models.CharField(max_length=16, choices=Modality.choices)
    # Names from learners.catalog; a change takes effect at the next retrain.
    featuriser = models.CharField(max_length=64, default="text_tfidf")
    query_strategy = models.CharField(max_length=64, default="margin")
    estimator = models.CharField(max_length=64, default="logistic_regression")
    retrain_every = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1)],
        help_text="Enqueue a retrain after this many new labels.",
    )
    overlap = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1)],
        help_text="Distinct annotators each item needs.",
    )
    lease_seconds = models.PositiveIntegerField(
        default=600, validators=[MinValueValidator(1)],
        help_text="How long a served item stays reserved for its annotator.",
    )
    cold_start_seed = models.IntegerField(default=0)
    benchmark_dataset = models.CharField(
        max_length=64, blank=True,
        help_text="The active-learning benchmark data set this project's data comes from; "
                  "its random-sampling curve is drawn as a baseline.",
    )
    # Counters of human labels, kept by annotate.services.annotations.
    label_count = models.PositiveIntegerField(default=0)
    cost_spent = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))
    # label_count at the last retrain request, so exactly one request is made per N labels.
    retrain_requested_at = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(overlap__gte=1), name="project_overlap_positive"),
            models.CheckConstraint(condition=Q(retrain_every__gte=1), name="project_retrain_every_positive"),
        ]

    def __str__(self) -> str:
        return self.name


class Label(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="labels")
    name = models.CharField(max_length=100)
    position = models.PositiveSmallIntegerField(default=0, help_text="Order of buttons and number keys.")

    class Meta:
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="label_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ANNOTATOR = "annotator", "Annotator"


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)
    quota = models.PositiveIntegerField(
        null=True, blank=True, help_text="Most labels this annotator may give; empty means no limit."
    )
    label_count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class Budget(models.Model):
    """What a project may spend on human labels. Empty limits mean no limit."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="budget")
    max_labels = models.PositiveIntegerField(null=True, blank=True)
    cost_per_label = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("0"))
    max_cost = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)

    def __str__(self) -> str:
        return f"budget of {self.project}"


class ImportStatus(models.TextChoices):
    QUEUED = "queued", "Queued"  # accepted from an upload; its task not started yet
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class ImportJob(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="import_jobs")
    source_name = models.CharField(max_length=255)
    file_format = models.CharField(max_length=8)
    options = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=ImportStatus.choices, default=ImportStatus.RUNNING)
    task_id = models.CharField(max_length=64, blank=True, default="")
    rows_read = models.PositiveIntegerField(default=0)
    rows_imported = models.PositiveIntegerField(default=0)
    rows_skipped = models.PositiveIntegerField(default=0)
    labels_imported = models.PositiveIntegerField(default=0)
    errors = models.JSONField(default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["task_id"], name="importjob_task")]


class Item(models.Model):
    # Items are the big table (millions of rows), and every index costs on
    # import and on each re-score. `project` is covered by the unique
    # (project, external_id) index; `import_job` and `predicted_label` are only
    # looked up when such a row is deleted, which is rare.
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="items", db_index=False)
    external_id = models.CharField(max_length=255)
    data = models.JSONField(help_text='{"text": ...} for text projects; column -> value for tabular ones.')
    import_job = models.ForeignKey(ImportJob, null=True, blank=True, on_delete=models.SET_NULL, db_index=False)
    # Queue state. Higher priority is served first: the current model's
    # uncertainty score, or a seeded random number before any model exists.
    priority = models.FloatField(default=0.0)
    annotation_count = models.PositiveIntegerField(default=0)
    lease_count = models.PositiveIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    done = models.BooleanField(default=False)
    # What the model that set `priority` predicts.
    predicted_label = models.ForeignKey(
        Label, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    confidence = models.FloatField(null=True, blank=True)
    scored_by_version = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "external_id"], name="item_unique_external_id"),
        ]
        indexes = [
            # The queue scan: open items of a project, best first.
            models.Index(
                fields=["project", "-priority", "id"], condition=Q(done=False), name="item_queue_open",
            ),
        ]

    def __str__(self) -> str:
        return self.external_id

    @property
    def text(self) -> str | None:
        value = self.data.get("text") if isinstance(self.data, dict) else None
        return value if isinstance(value, str) else None


class AnnotationSource(models.TextChoices):
    HUMAN = "human", "Annotator"
    IMPORT = "import", "Imported"


class Annotation(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="annotations")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="annotations")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="annotations"
    )
    label = models.ForeignKey(Label, on_delete=models.PROTECT, related_name="annotations")
    source = models.CharField(max_length=8, choices=AnnotationSource.choices, default=AnnotationSource.HUMAN)
    seconds = models.FloatField(null=True, blank=True, help_text="Time from serving to labelling.")
    cost = models.DecimalField(max_digits=8, decimal_places=2, default=Decimal("0"))
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["project", "annotator", "-id"], name="annotation_by_annotator"),
        ]


class AssignmentStatus(models.TextChoices):
    ACTIVE = "active", "Leased"
    ANNOTATED = "annotated", "Annotated"
    SKIPPED = "skipped", "Skipped"
    EXPIRED = "expired", "Expired"


class Assignment(models.Model):
    """A lease: an item served to one annotator until `expires_at`.

    One row per (item, annotator): a lease that expired and is served again
    reuses its row, so "has this annotator seen it" is one index lookup.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="assignments")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=12, choices=AssignmentStatus.choices, default=AssignmentStatus.ACTIVE)
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["item", "annotator"], name="assignment_unique_item_annotator"),
        ]
        indexes = [
            models.Index(fields=["project", "annotator", "status"], name="assignment_by_annotator"),
            models.Index(
                fields=["project", "expires_at"], condition=Q(status="active"), name="assignment_active",
            ),
        ]
