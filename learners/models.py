"""Model versions: every retrain of a project stores one, with honest metrics."""
from __future__ import annotations

from django.db import models

from annotate.models import Item, Project


class ModelVersion(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    number = models.PositiveIntegerField()
    # The retrain request this version answers (the Celery task id by default):
    # a redelivered request finds its version instead of training twice.
    request_id = models.CharField(max_length=64)
    estimator = models.CharField(max_length=64)
    query_strategy = models.CharField(max_length=64)
    featuriser = models.CharField(max_length=64, blank=True)
    trained_on = models.PositiveIntegerField(help_text="Labelled items used for training.")
    label_count = models.PositiveIntegerField(help_text="The project's human label count at training time.")
    metrics = models.JSONField(default=dict)
    artifact = models.BinaryField(help_text="The fitted estimator, pickled with joblib.")
    items_scored = models.PositiveIntegerField(default=0)
    train_seconds = models.FloatField(default=0.0)
    score_seconds = models.FloatField(default=0.0)
    # Predictions on a fixed sample of items, compared across versions for the stopping signal:
    # {"ids": [item ids], "predicted": [class names]}.
    stop_set = models.JSONField(default=dict, blank=True)
    # Set when the version is a meta-model adapted to the project's first labels (workbench.adapt),
    # not an estimator trained from scratch.
    meta_model = models.ForeignKey("MetaModel", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="adapted_versions")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="modelversion_unique_number"),
            models.UniqueConstraint(fields=["project", "request_id"], name="modelversion_unique_request"),
        ]

    def __str__(self) -> str:
        return f"{self.project} v{self.number}"


class FeatureSpace(models.Model):
    """A featuriser fitted for one project; items' cached rows live in ItemFeatures."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="feature_spaces")
    featuriser = models.CharField(max_length=64)
    version = models.PositiveIntegerField()
    dim = models.PositiveIntegerField()
    is_sparse = models.BooleanField(default=False)
    state = models.BinaryField(help_text="The fitted featuriser, pickled with joblib.")
    fitted_on = models.PositiveIntegerField(help_text="Items in the fit sample.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "featuriser", "version"], name="featurespace_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.project} {self.featuriser} v{self.version}"


class ItemFeatures(models.Model):
    """One item's feature row in one feature space (see learners.ml.feature_rows for the encoding)."""

    space = models.ForeignKey(FeatureSpace, on_delete=models.CASCADE, related_name="rows", db_index=False)
    # No index of its own: the (space, item) constraint serves every lookup, and items are only
    # deleted with their project, whose spaces cascade to these rows (the constraint is deferred).
    item = models.ForeignKey(Item, on_delete=models.DO_NOTHING, related_name="+", db_index=False)
    vector = models.BinaryField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["space", "item"], name="itemfeatures_unique")]


class FeatureSkip(models.Model):
    """An item its space's featuriser could not read (or whose cached row was corrupt), and why.

    Such an item has no ItemFeatures row in the space, so it is left out of scoring, and
    `features_fill` does not try it again: delete this row to have it featurised again
    (after fixing the item's data). Listed by `learners.services.features.feature_skips`
    and in the result of `workbench.featurise`.
    """

    space = models.ForeignKey(FeatureSpace, on_delete=models.CASCADE, related_name="skips", db_index=False)
    # As ItemFeatures.item: no index of its own, the (space, item) constraint serves every lookup.
    item = models.ForeignKey(Item, on_delete=models.DO_NOTHING, related_name="+", db_index=False)
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["space", "item"], name="featureskip_unique")]


class MetaModelStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class MetaModel(models.Model):
    """What earlier projects taught: meta-parameters trained on their labelled features.

    Source projects share the modality and featuriser, so a new project with
    the same featuriser can start from it (`workbench.adapt`).
    """

    name = models.CharField(max_length=200)
    modality = models.CharField(max_length=16)
    featuriser = models.CharField(max_length=64)
    algorithm = models.CharField(max_length=32, help_text="maml, fomaml, anil, reptile or protonet.")
    source_projects = models.ManyToManyField(Project, related_name="+", blank=True)
    hyper_parameters = models.JSONField(default=dict)
    metrics = models.JSONField(default=dict, blank=True)
    artifact = models.BinaryField(blank=True, default=b"", help_text="Meta-parameters and settings (torch.save).")
    status = models.CharField(max_length=12, choices=MetaModelStatus.choices, default=MetaModelStatus.QUEUED)
    task_id = models.CharField(max_length=64, blank=True, default="")
    cancel_requested = models.BooleanField(default=False, help_text="Set to stop a running meta-training.")
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.algorithm}, {self.featuriser})"


class WarmStart(models.Model):
    """A project's choice of meta-model: until its own model beats the adapted one on held-out
    labels, the adapted model orders the queue."""

    project = models.OneToOneField(Project, on_delete=models.CASCADE, related_name="warm_start")
    meta_model = models.ForeignKey(MetaModel, on_delete=models.CASCADE, related_name="warm_starts")
    created_at = models.DateTimeField(auto_now_add=True)
    # The last held-out comparison (learners.meta.warm_start.compare_on_folds) with the labels it used:
    # {"own_accuracy", "adapted_accuracy", "folds", "n_labelled", "version"}.
    comparison = models.JSONField(default=dict, blank=True)
    # Set, for good, by the first retrain whose own model beat the adapted one on held-out labels.
    handed_over_version = models.PositiveIntegerField(null=True, blank=True)
    handed_over_at = models.DateTimeField(null=True, blank=True)

    @property
    def active(self) -> bool:
        """The adapted meta-model still orders the queue (the own model has not beaten it)."""
        return self.handed_over_version is None

    def __str__(self) -> str:
        return f"{self.project} from {self.meta_model}"


class Federation(models.Model):
    """Sites that train one model together; only model updates leave a site.

    The settings here are the run's plan (`learners.federated.coordinator.FederationPlan`):
    which strategy combines updates, which backend carries them, and the privacy layers.
    """

    BACKENDS = [("inprocess", "in-process simulation"), ("celery", "Celery queue per site"),
                ("flower", "Flower SuperLink and a SuperNode per site")]
    MODES = [("sync", "synchronous rounds"), ("async", "asynchronous (buffered, FedBuff)")]

    name = models.CharField(max_length=200, unique=True)
    owner = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="+")
    backend = models.CharField(max_length=16, choices=BACKENDS, default="inprocess")
    featuriser = models.CharField(max_length=64, help_text="A shared-space featuriser, so a row means the same "
                                                           "at every site.")
    n_features = models.PositiveIntegerField(help_text="Width of the featuriser's rows (MiniLM: 384; 8x8 pixels: 64).")
    estimator = models.CharField(max_length=64, default="logistic_regression",
                                 help_text="logistic_regression or mlp: models whose weights can be averaged.")
    classes = models.JSONField(help_text="Label names in the model's output order; every site has these labels.")
    strategy = models.CharField(max_length=32, default="fedavg")
    strategy_parameters = models.JSONField(default=dict, blank=True)
    training = models.JSONField(default=dict, blank=True, help_text="Local training: epochs, batch_size, lr.")
    mode = models.CharField(max_length=8, choices=MODES, default="sync")
    buffer_size = models.PositiveIntegerField(default=2, help_text="Asynchronous mode: aggregate every K arrivals.")
    sites_per_round = models.PositiveIntegerField(null=True, blank=True, help_text="Empty: every site.")
    timeout_seconds = models.FloatField(default=120.0, help_text="A site that has not answered by then drops out.")
    min_updates = models.PositiveIntegerField(default=2, help_text="A round with fewer updates changes nothing. "
                                              "Below 2 needs allow_single_site.")
    allow_single_site = models.BooleanField(default=False, help_text="Allow rounds aggregated from one site's "
                                            "update alone (the coordinator then sees that site's update as is).")
    secure_aggregation = models.BooleanField(default=False)
    # {} for none, else {"clip_norm", "noise_multiplier", "delta", "mode": "site"|"coordinator"}
    privacy = models.JSONField(default=dict, blank=True)
    compression = models.CharField(max_length=8, default="none", choices=[("none", "none"), ("int8", "8-bit")])
    # The coordinator's Ed25519 key for this federation (learners.federated.identity): requests to Celery
    # sites are signed with it; each site's offer names the public half.
    signing_key = models.CharField(max_length=64, blank=True, editable=False)
    public_key = models.CharField(max_length=64, blank=True, editable=False)
    # Flower: the SuperLink's Control API address, and its CA certificate (empty: --insecure, tests only).
    flower_address = models.CharField(max_length=200, blank=True)
    flower_root_certificates = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class FederationSite(models.Model):
    """A member site. In-process: a project of this workbench holds its labels. Celery and Flower: a
    separate deployment that offered one of its projects to this federation (`SiteOffer`, at the site);
    the coordinator names the federation, never a project of the site. Celery sites consume queue
    ``site.<slug>``; a Flower site answers the hello with its slug."""

    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="sites")
    slug = models.SlugField(max_length=50)
    region = models.CharField(max_length=50, blank=True, help_text="Regional aggregator; empty: report directly.")
    project = models.ForeignKey(Project, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["federation", "slug"], name="federation_site_slug_unique")]
        ordering = ["slug"]

    @property
    def queue(self) -> str:
        return f"site.{self.slug}"

    def __str__(self) -> str:
        return f"{self.federation}: {self.slug}"


class FederatedRun(models.Model):
    federation = models.ForeignKey(Federation, on_delete=models.CASCADE, related_name="runs")
    rounds = models.PositiveIntegerField()
    status = models.CharField(max_length=12, choices=MetaModelStatus.choices, default=MetaModelStatus.QUEUED)
    task_id = models.CharField(max_length=64, blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True, default="")
    plan = models.JSONField(default=dict, blank=True, help_text="The settings the run started with.")
    weights = models.BinaryField(blank=True, default=b"", help_text="The final global weights (wire format).")
    epsilon = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.federation} run {self.pk}"


class FederatedRound(models.Model):
    """One aggregation of a run, with who took part and what crossed the boundary."""

    run = models.ForeignKey(FederatedRun, on_delete=models.CASCADE, related_name="round_records")
    number = models.PositiveIntegerField()
    version = models.PositiveIntegerField()
    participants = models.JSONField(default=list)
    dropouts = models.JSONField(default=dict, help_text="site -> reason")
    updates = models.PositiveIntegerField(default=0)
    aggregated = models.BooleanField(default=True)
    bytes_out = models.BigIntegerField(default=0)
    bytes_in = models.BigIntegerField(default=0, help_text="What reached the coordinator.")
    site_bytes_in = models.BigIntegerField(default=0, help_text="What left the sites.")
    metrics = models.JSONField(default=dict)
    epsilon = models.FloatField(null=True, blank=True)
    seconds = models.FloatField(default=0.0)
    payloads = models.JSONField(default=list, help_text="The payload audit of this round: every message across "
                                                         "a site boundary.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "number"], name="federated_round_unique")]
        ordering = ["run", "number"]


class WorkKind(models.TextChoices):
    RETRAIN = "retrain", "retrain"
    SCORE_POOL = "score_pool", "re-score the pool"
    FEATURISE = "featurise", "featurise"


class Work(models.Model):
    """A project's background work of one kind, as a state: at most one request pending and one run running.

    The database, not the broker, is the record of what is due (learners.services.work): a
    request is written in the transaction that makes it due (the label, the import), its
    message is sent after commit, and a reconciler re-sends what the broker lost.
    """

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="work")
    kind = models.CharField(max_length=16, choices=WorkKind.choices)
    # Requests recorded so far; the pending one is number `requested`.
    requested = models.PositiveIntegerField(default=0)
    pending_since = models.DateTimeField(null=True, blank=True)
    pending_reason = models.CharField(max_length=200, blank=True)
    # A retrain asked for by a person or a settings change trains even with no new labels.
    pending_force = models.BooleanField(default=False)
    # When the pending request's message reached the broker; None: not sent (yet), the reconciler sends it.
    sent_at = models.DateTimeField(null=True, blank=True)
    running_since = models.DateTimeField(null=True, blank=True)
    running_task_id = models.CharField(max_length=64, blank=True)
    # What the run answers: its model version's request_id (a redelivered run finds its version).
    running_request_id = models.CharField(max_length=64, blank=True)
    running_force = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    runs = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["project", "kind"], name="work_unique_kind")]

    def __str__(self) -> str:
        return f"{self.project} {self.kind}"


# -- at a site: what it agreed to share, and what it did share -----------------------------------------------


class SiteOffer(models.Model):
    """This workbench's consent to take part in a federation run elsewhere, kept at the site.

    A project's manager offers the project to a federation named by its coordinator, with the
    coordinator's identity and the limits (`learners.federated.limits.SiteLimits`) every request is
    checked against. Requests name the federation; the offer says which project answers.
    """

    TRANSPORTS = [("celery", "Celery queue on the federation's broker"), ("flower", "Flower SuperNode")]

    federation = models.CharField(max_length=200, unique=True, help_text="The federation's name at its "
                                  "coordinator.")
    site_name = models.SlugField(max_length=50, help_text="What the coordinator calls this site.")
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="offers")
    transport = models.CharField(max_length=8, choices=TRANSPORTS, default="celery")
    coordinator_key = models.CharField(max_length=64, blank=True, help_text="Celery: the coordinator's Ed25519 "
                                       "public key (hex); requests not signed with it are refused.")
    coordinator_certificate = models.CharField(max_length=64, blank=True, help_text="Flower: SHA-256 of the "
                                               "SuperLink's CA certificate this site's SuperNode trusts.")
    limits = models.JSONField(default=dict, help_text="learners.federated.limits.SiteLimits fields.")
    holdout_fraction = models.FloatField(default=0.2, help_text="Labelled rows kept aside for evaluating the "
                                         "global model (never trained on).")
    enabled = models.BooleanField(default=True)
    offered_by = models.ForeignKey("auth.User", on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["federation"]

    def __str__(self) -> str:
        return f"{self.project} offered to {self.federation}"


class SiteLedgerEntry(models.Model):
    """One message this site received from a federation or sent to it, or a request it refused."""

    offer = models.ForeignKey(SiteOffer, null=True, blank=True, on_delete=models.SET_NULL, related_name="ledger")
    federation = models.CharField(max_length=200, blank=True)
    at = models.DateTimeField(auto_now_add=True)
    transport = models.CharField(max_length=8)
    direction = models.CharField(max_length=8, choices=[("received", "received"), ("sent", "sent"),
                                                         ("refused", "refused")])
    kind = models.CharField(max_length=200, help_text="Message kind, or the task name of a refused task.")
    round = models.PositiveIntegerField(null=True, blank=True)
    nbytes = models.BigIntegerField(default=0)
    arrays = models.JSONField(default=dict, help_text="name -> [dtype, shape]")
    meta = models.JSONField(default=dict, help_text="Every header field.")
    reason = models.TextField(blank=True, help_text="Why the request was refused.")

    class Meta:
        ordering = ["-at", "-pk"]
