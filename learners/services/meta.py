"""Meta-models: create from source projects, meta-train, cancel, adapt to a project, warm-start its queue.

The maths is in `learners.meta` (no Django); this module reads labels and
features from the database, writes the records, and decides which model orders
a warm-started project's queue (`learners.meta.warm_start`).

Web processes import this module (create, cancel, warm-start choice), so it
imports the maths (torch, scikit-learn, numpy) only inside the functions that
workers run; `tests/test_web_imports.py` checks it.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from annotate.access import can_manage, can_meta_train, can_view
from annotate.models import Project
from learners.catalog import META_ALGORITHMS
from learners.catalog import META_HYPER_PARAMETERS as HYPER_PARAMETERS
from learners.models import MetaModel, MetaModelStatus, WarmStart
from learners.services.meta_data import MetaDataInvalid, pooled_sources, sources_check

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


class MetaModelInvalid(ValueError):
    """A meta-model request or warm start that cannot be accepted; the message says which field and why."""


class AdaptationFailed(RuntimeError):
    """A meta-model cannot be adapted to a project; the message says why."""


# Checked for cancellation every this many steps (one small query each).
CANCEL_CHECK_EVERY = 5
TERMINAL = {MetaModelStatus.SUCCEEDED, MetaModelStatus.FAILED, MetaModelStatus.CANCELLED}


def hyper_parameters_clean(algorithm: str, given: dict[str, Any] | None) -> dict[str, Any]:
    """Known, typed, in-range hyper-parameters with defaults filled in; MetaModelInvalid naming the first bad one."""
    if algorithm not in META_ALGORITHMS:
        raise MetaModelInvalid(f"algorithm: {algorithm!r} is not one of {sorted(META_ALGORITHMS)}")
    if given is not None and not isinstance(given, dict):
        raise MetaModelInvalid(f"hyper_parameters: expected an object of name to value, got {type(given).__name__}")
    given = dict(given or {})
    unknown = sorted(set(given) - set(HYPER_PARAMETERS))
    if unknown:
        raise MetaModelInvalid(f"hyper_parameters: unknown {unknown}; known: {sorted(HYPER_PARAMETERS)}")
    clean = {}
    for name, (kind, low, high, default) in HYPER_PARAMETERS.items():
        value = given.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise MetaModelInvalid(f"hyper_parameters.{name}: expected {'an integer' if kind is int else 'a number'}, "
                                   f"got {value!r}")
        value = kind(value)
        if not low <= value <= high:
            raise MetaModelInvalid(f"hyper_parameters.{name}: {value} is outside [{low}, {high}]")
        clean[name] = value
    if algorithm == "protonet":  # no inner loop, no head: these would only mislead in the record
        for name in ("lr", "adapt_steps"):
            clean.pop(name)
    return clean


def meta_model_create(*, user, name: str, source_project_ids: list[int], algorithm: str,
                      hyper_parameters: dict[str, Any] | None = None) -> MetaModel:
    """A queued meta-model over the source projects, checked so that `meta_model_train` can run.

    `user` acts (`annotate.access.OPERATOR` for a command run without --user):
    they must be allowed to meta-train on every source project
    (`can_meta_train`); a project they may not view is reported as missing.
    Checks the name, that every project exists and shares modality and a
    shared-space featuriser, the hyper-parameters, and that the sources' labels
    already give enough classes with ``k_shot + q_query`` examples for
    ``n_way``-way episodes. Nothing is written when a check fails.
    """
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise MetaModelInvalid("name: give a name of 1 to 200 characters")
    ids = list(dict.fromkeys(source_project_ids or []))
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise MetaModelInvalid("source_project_ids: give a list of project ids")
    projects = [p for p in Project.objects.filter(pk__in=ids).order_by("pk") if can_view(user, p)]
    missing = sorted(set(ids) - {p.pk for p in projects})
    if missing:
        raise MetaModelInvalid(f"source_project_ids: no project with id {missing}")
    if not can_meta_train(user, projects):
        refused = [p.pk for p in projects if not can_manage(user, p)]
        raise MetaModelInvalid(f"source_project_ids: you may meta-train only on projects you own; not on {refused}")
    hyper = hyper_parameters_clean(algorithm, hyper_parameters)
    try:
        modality, featuriser = sources_check(projects)
    except MetaDataInvalid as exc:
        raise MetaModelInvalid(f"source_project_ids: {exc}") from None
    classes = _classes_with_enough(projects, hyper["k_shot"] + hyper["q_query"])
    if len(classes) < hyper["n_way"]:
        raise MetaModelInvalid(
            f"source_project_ids: {hyper['n_way']}-way episodes need {hyper['n_way']} classes with at least "
            f"{hyper['k_shot'] + hyper['q_query']} labelled items (k_shot + q_query); the sources have "
            f"{len(classes)}: {sorted(classes)[:20]}"
        )
    with transaction.atomic():
        meta_model = MetaModel.objects.create(name=name, modality=modality, featuriser=featuriser,
                                              algorithm=algorithm, hyper_parameters=hyper)
        meta_model.source_projects.set(projects)
    return meta_model


def _classes_with_enough(projects: list[Project], minimum: int) -> set[str]:
    """Per-project class keys ("<project>:<label>") with at least `minimum` labelled items (majority labels)."""
    from annotate.selectors import training_labels

    keys = set()
    for project in projects:
        _, labels = training_labels(project)
        keys |= {f"{project.pk}:{label}" for label, n in Counter(labels).items() if n >= minimum}
    return keys


def meta_model_train(*, meta_model_id: int, progress: Progress | None = None) -> dict:
    """Meta-train a queued meta-model on its source projects' labels; the record ends succeeded, failed or cancelled.

    Cancelling (`meta_model_cancel`) is seen within `CANCEL_CHECK_EVERY` steps:
    training stops and the record is marked cancelled without an artifact. A
    failure marks it failed with the error, then re-raises.
    """
    from learners.meta import meta_learner_to_bytes
    from learners.meta.recipes import meta_train_default

    with transaction.atomic():
        meta_model = MetaModel.objects.select_for_update().get(pk=meta_model_id)
        if meta_model.status in TERMINAL:
            return _meta_summary(meta_model) | {"already": True}
        if meta_model.cancel_requested:
            return _meta_finish(meta_model, MetaModelStatus.CANCELLED)
        meta_model.status = MetaModelStatus.RUNNING
        meta_model.save(update_fields=["status"])
    hyper = dict(meta_model.hyper_parameters)
    try:
        projects = list(meta_model.source_projects.order_by("pk"))
        sources_check(projects, featuriser=meta_model.featuriser)
        X, y, report = pooled_sources(projects, min_per_class=hyper["k_shot"] + hyper["q_query"])
        if len(set(y.tolist())) < hyper["n_way"]:
            raise MetaDataInvalid(f"{hyper['n_way']}-way episodes need {hyper['n_way']} classes with "
                                  f"{hyper['k_shot'] + hyper['q_query']} labelled items; the sources have "
                                  f"{len(set(y.tolist()))} (left out: {report['left_out'][:10]})")
        steps = hyper["steps"]
        checks = {"n": 0}

        def should_stop() -> bool:
            checks["n"] += 1
            if checks["n"] % CANCEL_CHECK_EVERY:
                return False
            return MetaModel.objects.filter(pk=meta_model_id, cancel_requested=True).exists()

        def step_done(step: int, total: int, metrics: dict) -> None:
            if progress:
                progress("meta-training", step, total)

        started = time.perf_counter()
        algorithm, history = meta_train_default(
            X, y, algorithm=meta_model.algorithm, progress=step_done, should_stop=should_stop, **hyper,
        )
        seconds = time.perf_counter() - started
    except Exception as exc:
        MetaModel.objects.filter(pk=meta_model_id).update(status=MetaModelStatus.FAILED, error=str(exc)[:2000],
                                                          finished_at=timezone.now())
        raise
    meta_model.refresh_from_db()
    if history.get("stopped") and meta_model.cancel_requested:
        return _meta_finish(meta_model, MetaModelStatus.CANCELLED, metrics={"steps_done": history["steps_done"]})
    metrics = {
        "steps_done": history["steps_done"], "steps": steps, "train_seconds": round(seconds, 2),
        "classes": int(len(set(y.tolist()))), "items": int(len(y)), "sources": report["projects"],
        "left_out": report["left_out"][:50],
        "final_query_accuracy": _mean_tail(history.get("accuracy", [])),
    }
    for key in ("best_step", "validation", "settings", "validation_classes"):
        if key in history:
            metrics[key] = history[key]
    if history.get("validation"):
        metrics["validation_accuracy"] = max(v["accuracy"] for v in history["validation"])
    meta_model.artifact = meta_learner_to_bytes(algorithm)
    return _meta_finish(meta_model, MetaModelStatus.SUCCEEDED, metrics=metrics)


def _mean_tail(values: list[float], n: int = 20) -> float | None:
    import numpy as np

    return round(float(np.mean(values[-n:])), 4) if values else None


def _meta_finish(meta_model: MetaModel, status: str, *, metrics: dict | None = None) -> dict:
    meta_model.status = status
    meta_model.finished_at = timezone.now()
    if metrics is not None:
        meta_model.metrics = metrics
    meta_model.save(update_fields=["status", "finished_at", "metrics", "artifact"])
    logger.info("meta-model %s: %s", meta_model.pk, status)
    return _meta_summary(meta_model)


def _meta_summary(meta_model: MetaModel) -> dict:
    return {"status": meta_model.status, "meta_model_id": meta_model.pk, "algorithm": meta_model.algorithm,
            "metrics": meta_model.metrics}


def meta_model_cancel(meta_model: MetaModel) -> MetaModel:
    """Ask a queued or running meta-training to stop. A queued one is cancelled at once; a finished one is left."""
    with transaction.atomic():
        meta_model = MetaModel.objects.select_for_update().get(pk=meta_model.pk)
        if meta_model.status in TERMINAL:
            return meta_model
        meta_model.cancel_requested = True
        fields = ["cancel_requested"]
        if meta_model.status == MetaModelStatus.QUEUED:
            meta_model.status, meta_model.finished_at = MetaModelStatus.CANCELLED, timezone.now()
            fields += ["status", "finished_at"]
        meta_model.save(update_fields=fields)
    return meta_model


def meta_models_for(project: Project):
    """Succeeded meta-models a project can warm-start from: same modality and featuriser, not trained on it."""
    return (MetaModel.objects.filter(status=MetaModelStatus.SUCCEEDED, modality=project.modality,
                                     featuriser=project.featuriser)
            .exclude(source_projects=project))


def warm_start_set(project: Project, meta_model: MetaModel) -> WarmStart:
    """Name `meta_model` as the project's warm start (a fresh start: any earlier handover is forgotten)."""
    if meta_model.status != MetaModelStatus.SUCCEEDED:
        raise MetaModelInvalid(f"meta_model: {meta_model.name!r} is {meta_model.status}, not succeeded")
    if (meta_model.modality, meta_model.featuriser) != (project.modality, project.featuriser):
        raise MetaModelInvalid(
            f"meta_model: {meta_model.name!r} was trained on {meta_model.modality} items with "
            f"{meta_model.featuriser!r} features; this project has {project.modality} items with "
            f"{project.featuriser!r}"
        )
    if meta_model.source_projects.filter(pk=project.pk).exists():
        raise MetaModelInvalid(f"meta_model: {meta_model.name!r} was meta-trained on this project's own labels")
    warm, _ = WarmStart.objects.update_or_create(
        project=project,
        defaults={"meta_model": meta_model, "comparison": {}, "handed_over_version": None, "handed_over_at": None},
    )
    return warm


def warm_start_clear(project: Project) -> None:
    WarmStart.objects.filter(project=project).delete()


def meta_learner_of(meta_model: MetaModel):
    """The meta-model's algorithm, rebuilt from its artifact (AdaptationFailed unless it succeeded)."""
    from learners.meta import meta_learner_from_bytes

    if meta_model.status != MetaModelStatus.SUCCEEDED or not meta_model.artifact:
        raise AdaptationFailed(f"meta-model {meta_model.pk} ({meta_model.name!r}) is {meta_model.status}; only a "
                               "succeeded one can be adapted")
    return meta_learner_from_bytes(bytes(meta_model.artifact))


def adapted_predictor(algorithm, X: np.ndarray, y: list[str] | np.ndarray):
    """`algorithm` (a rebuilt meta-learner) adapted to labelled rows (X, y): predict_proba, predict, classes_."""
    import numpy as np

    from learners.meta import adapt as meta_adapt

    return meta_adapt(algorithm, algorithm.meta_params(), np.asarray(X, dtype=np.float32), np.asarray(y, dtype=str))


def labels_short_of(project: Project, labels: list[str], k_shot: int) -> dict[str, int]:
    """The project's labels with fewer than `k_shot` labelled items, and how many they have."""
    counts = Counter(labels)
    names = project.labels.values_list("name", flat=True)
    return {name: counts.get(name, 0) for name in names if counts.get(name, 0) < k_shot}


@dataclass
class WarmStartChoice:
    """Which model a warm-started project's new version is, and the held-out comparison it was chosen on.

    `predictor` is the adapted meta-model when it orders the queue, None when the
    project's own model beat it (`hand_over`).
    """

    meta_model: MetaModel
    comparison: dict
    predictor: Any | None
    adapt_seconds: float = 0.0

    @property
    def hand_over(self) -> bool:
        return self.predictor is None

    def metrics(self) -> dict:
        """The version's metrics when the adapted model is stored: its held-out accuracy is the version's."""
        c = self.comparison
        metrics = {"accuracy": c["adapted_accuracy"], "own_accuracy": c["own_accuracy"], "cv_folds": c["folds"],
                   "n_labelled": c["n_labelled"], "meta_model": self.meta_model.pk,
                   "meta_algorithm": self.meta_model.algorithm, "adapt_seconds": round(self.adapt_seconds, 3)}
        if c.get("reason"):
            metrics["accuracy_reason"] = c["reason"]
        return metrics


def warm_start_choose(project: Project, X: Any, labels: list[str], *, own_estimator: Any,
                      meta_model: MetaModel | None = None) -> WarmStartChoice | None:
    """Compare the adapted meta-model with the project's own model on the same held-out folds, and choose.

    Without `meta_model` (a retrain): the project's active warm start, if any.
    Returns None when there is none or it was handed over, or when some label
    has fewer than the meta-model's ``k_shot`` labelled items (then nothing can
    be adapted yet and the own model orders the queue as without a warm start).
    Otherwise the adapted predictor, unless the own model's held-out accuracy is
    strictly higher: then `hand_over`.

    With `meta_model` (an explicit `workbench.adapt`): always the adapted
    predictor (the comparison is recorded, not acted on); a label short of
    ``k_shot`` examples raises AdaptationFailed.
    """
    import numpy as np

    from learners.meta.warm_start import compare_on_folds, own_model_wins

    forced = meta_model is not None
    if meta_model is None:
        warm = WarmStart.objects.select_related("meta_model").filter(project=project).first()
        if warm is None or not warm.active:
            return None
        meta_model = warm.meta_model
    if (meta_model.modality, meta_model.featuriser) != (project.modality, project.featuriser):
        if forced:
            raise AdaptationFailed(f"meta-model {meta_model.name!r} was trained on {meta_model.featuriser!r} "
                                   f"features; project {project.pk} now uses {project.featuriser!r}")
        return None
    k_shot = int(meta_model.hyper_parameters.get("k_shot", 1))
    short = labels_short_of(project, labels, k_shot)
    if short:
        if forced:
            raise AdaptationFailed(f"adapting {meta_model.name!r} needs at least {k_shot} labelled item(s) of every "
                                   f"label (k_shot); short: {short}")
        return None
    algorithm = meta_learner_of(meta_model)
    dense = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float32)
    comparison = compare_on_folds(dense, labels, own_estimator=own_estimator,
                                  adapt_fn=lambda Xa, ya: adapted_predictor(algorithm, Xa, ya),
                                  seed=project.cold_start_seed)
    if not forced and own_model_wins(comparison):
        return WarmStartChoice(meta_model, comparison, None)
    started = time.perf_counter()
    predictor = adapted_predictor(algorithm, dense, labels)
    return WarmStartChoice(meta_model, comparison, predictor, time.perf_counter() - started)


def warm_start_record(project_id: int, choice: WarmStartChoice, *, version: int) -> None:
    """Store the comparison a version was chosen on; on `hand_over`, the own model takes the queue for good."""
    fields: dict[str, Any] = {"comparison": choice.comparison | {"version": version}}
    if choice.hand_over:
        fields |= {"handed_over_version": version, "handed_over_at": timezone.now()}
    WarmStart.objects.filter(project_id=project_id, meta_model=choice.meta_model,
                             handed_over_version__isnull=True).update(**fields)


def warm_start_view(project: Project) -> dict | None:
    """What the project page says about the warm start (None without one)."""
    warm = WarmStart.objects.select_related("meta_model").filter(project=project).first()
    if warm is None:
        return None
    k_shot = int(warm.meta_model.hyper_parameters.get("k_shot", 1))
    return {"warm_start": warm, "meta_model": warm.meta_model, "active": warm.active, "k_shot": k_shot,
            "comparison": warm.comparison, "handed_over_version": warm.handed_over_version}


def meta_model_enqueue(meta_model: MetaModel) -> str:
    """Send `workbench.meta_train` for a queued meta-model; its task id is stored on the record."""
    from workbench.celery import enqueue

    task_id = enqueue("workbench.meta_train", meta_model_id=meta_model.pk)
    MetaModel.objects.filter(pk=meta_model.pk).update(task_id=task_id)
    return task_id
