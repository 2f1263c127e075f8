"""Federations on the Django side: create them, run them, and answer as a site.

The maths and the runtime live in `learners.federated` (no Django); this module
turns records into a `FederationPlan` and a backend, stores each round as it
finishes, and gives a site's worker its labelled rows.
"""
from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
from django.db import transaction
from django.utils import timezone

from annotate.models import Project
from annotate.selectors import training_labels
from learners.catalog import FEATURISERS
from learners.federated.backends.base import Backend
from learners.federated.backends.inprocess import InProcessBackend
from learners.federated.compression import COMPRESSORS
from learners.federated.coordinator import Coordinator, FederationPlan, RoundResult
from learners.federated.hierarchy import Region
from learners.federated.identity import keypair_new, request_sign
from learners.federated.local_training import LocalTraining, LocalTrainingError
from learners.federated.models import ModelSpec, ModelSpecError
from learners.federated.privacy import DifferentialPrivacy, PrivacyConfigError
from learners.federated.secure_aggregation import SecureAggregationUnsupported, check_strategy
from learners.federated.site import Site, SiteRefused, classes_digest
from learners.federated.strategies import StrategyError, strategy_create
from learners.federated.wire import Message, message_encode
from learners.models import FederatedRound, FederatedRun, Federation, FederationSite, MetaModelStatus
from learners.services.features import feature_space_current, features_fill, features_load

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
TERMINAL = {MetaModelStatus.SUCCEEDED, MetaModelStatus.FAILED, MetaModelStatus.CANCELLED}
LOCAL_TRAIN_TASK = "workbench.federated_local_train"
BACKENDS = {"inprocess", "celery", "flower"}


class FederationInvalid(ValueError):
    """Federation settings that cannot run; the message starts with the field's name."""


# -- a site's side ----------------------------------------------------------------------------------------


def site_rows(project: Project, classes: list[str], keep: Callable[[int], bool] | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:
    """The project's labelled feature rows and class indices in the federation's order.

    `keep(item_id)` chooses a part of them (a site's training rows or its held-out rows).
    Raises SiteRefused when a label is not one of the federation's classes.
    """
    if "shared_space" not in FEATURISERS[project.featuriser].provides:
        raise SiteRefused(f"this site's featuriser {project.featuriser!r} is fitted per project; "
                          "federations need a shared-space one")
    space = feature_space_current(project)
    features_fill(space)
    item_ids, labels = training_labels(project)
    if keep is not None:
        chosen = [i for i, item_id in enumerate(item_ids) if keep(item_id)]
        item_ids, labels = [item_ids[i] for i in chosen], [labels[i] for i in chosen]
    index = {name: i for i, name in enumerate(classes)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise SiteRefused(f"this site has labels the federation does not know: {len(unknown)} of them")
    X = features_load(space, item_ids) if item_ids else np.zeros((0, space.dim), dtype=np.float32)
    return np.asarray(X, dtype=np.float32), np.asarray([index[label] for label in labels], dtype=np.int64)


def project_site(project: Project, *, name: str, classes: list[str]) -> Site:
    """An in-process simulation's site: one of this workbench's projects, no limits (one operator owns all)."""
    return Site(name, rows=lambda: site_rows(project, classes), classes=classes)


# -- creating a federation --------------------------------------------------------------------------------


def federation_check(federation: Federation, sites: list[FederationSite]) -> FederationPlan:
    """The run plan of a federation and its sites, or FederationInvalid naming the field."""
    if FEATURISERS.get(federation.featuriser) is None or "shared_space" not in FEATURISERS[federation.featuriser].provides:
        shared = sorted(n for n, c in FEATURISERS.items() if "shared_space" in c.provides)
        raise FederationInvalid(f"featuriser: {federation.featuriser!r} is fitted per site, so rows would mean "
                                f"different things at each site; use one of {shared}")
    classes = federation.classes
    if not isinstance(classes, list) or len(classes) < 2 or len(set(classes)) != len(classes) \
            or not all(isinstance(c, str) and c for c in classes):
        raise FederationInvalid("classes: give at least two distinct label names")
    if classes != sorted(classes):
        raise FederationInvalid(f"classes: list them sorted by name, as sites order them: {sorted(classes)}")
    try:
        model = ModelSpec.for_estimator(federation.estimator, n_features=federation.n_features,
                                        n_classes=len(classes))
    except ModelSpecError as exc:
        raise FederationInvalid(f"estimator: {exc}") from None
    try:
        strategy = strategy_create(federation.strategy, **(federation.strategy_parameters or {}))
    except (StrategyError, ValueError) as exc:
        raise FederationInvalid(f"strategy: {exc}") from None
    try:
        training = LocalTraining.from_config(federation.training or {})
        unknown = sorted(set(federation.training or {}) - set(training.__dict__))
        if unknown:
            raise LocalTrainingError(f"unknown settings {unknown}; known: {sorted(training.__dict__)}")
    except (LocalTrainingError, TypeError) as exc:
        raise FederationInvalid(f"training: {exc}") from None
    privacy = None
    if federation.privacy:
        try:
            privacy = DifferentialPrivacy(**federation.privacy)
        except (PrivacyConfigError, TypeError) as exc:
            raise FederationInvalid(f"privacy: {exc}") from None
    if federation.compression not in COMPRESSORS:
        raise FederationInvalid(f"compression: {federation.compression!r}; choose one of {sorted(COMPRESSORS)}")
    if federation.backend not in BACKENDS:
        raise FederationInvalid(f"backend: {federation.backend!r}; choose one of {sorted(BACKENDS)}")
    if not sites:
        raise FederationInvalid("sites: a federation needs at least one site")
    if federation.backend == "celery" and not federation.signing_key:
        raise FederationInvalid("signing_key: this federation has no key to sign requests with")
    if federation.backend == "flower" and not federation.flower_address:
        raise FederationInvalid("flower_address: the SuperLink's address (host:port) this coordinator runs apps on")
    for site in sites:
        if federation.backend == "inprocess" and site.project is None:
            raise FederationInvalid(f"sites: in-process site {site.slug!r} needs a project of this workbench")
        if federation.backend != "inprocess" and site.project is not None:
            raise FederationInvalid(f"sites: site {site.slug!r} is another deployment: it offers its own project "
                                    "to this federation by name; the coordinator names no project of it")
        if site.project is not None:
            if site.project.featuriser != federation.featuriser:
                raise FederationInvalid(f"sites: project {site.project.pk} of site {site.slug!r} uses featuriser "
                                        f"{site.project.featuriser!r}, not {federation.featuriser!r}")
            names = sorted(site.project.labels.values_list("name", flat=True))
            if names != classes:
                raise FederationInvalid(f"sites: project {site.project.pk} of site {site.slug!r} has labels "
                                        f"{names}, not the federation's {classes}")
    regions = _regions(sites)
    per_round = federation.sites_per_round or len(sites)
    if federation.min_updates < 2 and not federation.allow_single_site:
        raise FederationInvalid("min_updates: a round aggregated from one site's update hands the coordinator that "
                                "update alone; use 2 or more, or set allow_single_site")
    if federation.mode == "sync" and federation.min_updates > per_round:
        raise FederationInvalid(f"min_updates: {federation.min_updates} updates can never arrive from the "
                                f"{per_round} site(s) a round asks")
    if federation.secure_aggregation and federation.backend == "flower":
        raise FederationInvalid("secure_aggregation: not with the flower backend yet (a ClientApp is a fresh "
                                "process per message, so a site's keys do not live through the round's four "
                                "messages); use the celery backend")
    if federation.backend == "flower" and (regions or federation.mode == "async"):
        raise FederationInvalid("backend: the flower backend runs synchronous rounds without regions so far")
    if federation.secure_aggregation and (regions or federation.mode == "async"):
        raise FederationInvalid("secure_aggregation: runs in synchronous rounds without regions")
    if federation.secure_aggregation:
        try:
            check_strategy(strategy)
        except SecureAggregationUnsupported as exc:
            raise FederationInvalid(f"secure_aggregation: {exc}") from None
    if federation.secure_aggregation and per_round < 3:
        raise FederationInvalid(f"secure_aggregation: needs at least 3 sites a round ({per_round} here): with two, "
                                "each site can subtract its own update from the sum and read the other's")
    if federation.sites_per_round is not None and not 1 <= federation.sites_per_round <= len(sites):
        raise FederationInvalid(f"sites_per_round: between 1 and the {len(sites)} sites, or empty for all")
    if not federation.timeout_seconds > 0:
        raise FederationInvalid("timeout_seconds: must be > 0")
    if federation.mode == "async" and not 1 <= federation.buffer_size <= len(sites):
        raise FederationInvalid(f"buffer_size: between 1 and the {len(sites)} sites")
    return FederationPlan(
        strategy=strategy, model=model, training=training, sites_per_round=federation.sites_per_round,
        timeout=federation.timeout_seconds, min_updates=federation.min_updates, classes_digest=classes_digest(classes),
        privacy=privacy, secure=federation.secure_aggregation, compression=federation.compression, regions=regions,
    )


def _regions(sites: list[FederationSite]) -> list[Region] | None:
    if not any(site.region for site in sites):
        return None
    missing = [site.slug for site in sites if not site.region]
    if missing:
        raise FederationInvalid(f"sites: {missing} have no region while others do; give every site a region")
    by_region: dict[str, list[str]] = {}
    for site in sites:
        by_region.setdefault(site.region, []).append(site.slug)
    return [Region(name, members) for name, members in sorted(by_region.items())]


def federation_create(*, name: str, owner, featuriser: str, n_features: int, classes: list[str],
                      sites: list[dict[str, Any]], **settings: Any) -> Federation:
    """A federation and its sites, checked as a whole; nothing is written when a check fails.

    `sites` items: ``{"slug", "project_id"?, "region"?}`` (a project only for in-process sites; other
    sites offer their own project to the federation by its name). The coordinator's signing key is
    made here; sites put its public half (`public_key`) in their offers.
    """
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise FederationInvalid("name: give a name of 1 to 200 characters")
    if Federation.objects.filter(name=name).exists():
        raise FederationInvalid(f"name: a federation named {name!r} exists")
    known = {f.name for f in Federation._meta.get_fields()}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise FederationInvalid(f"{unknown[0]}: not a federation setting")
    federation = Federation(name=name, owner=owner, featuriser=featuriser, n_features=n_features, classes=classes,
                            **settings)
    site_rows_: list[FederationSite] = []
    slugs = set()
    for i, entry in enumerate(sites or []):
        slug = str(entry.get("slug", ""))
        if not slug or not slug.replace("-", "").replace("_", "").isalnum() or slug in slugs:
            raise FederationInvalid(f"sites: site {i + 1} needs a unique slug of letters, digits, - and _")
        slugs.add(slug)
        project = None
        if entry.get("project_id") is not None:
            project = Project.objects.filter(pk=entry["project_id"]).first()
            if project is None:
                raise FederationInvalid(f"sites: site {slug!r}: no project with id {entry['project_id']}")
        unknown_keys = sorted(set(entry) - {"slug", "project_id", "region"})
        if unknown_keys:
            raise FederationInvalid(f"sites: site {slug!r}: {unknown_keys[0]!r} is not a site setting (a site "
                                    "offers its own project; the coordinator names none)")
        site_rows_.append(FederationSite(slug=slug, region=entry.get("region", ""), project=project))
    federation.signing_key, federation.public_key = keypair_new()
    federation_check(federation, site_rows_)
    with transaction.atomic():
        federation.save()
        for site in site_rows_:
            site.federation = federation
            site.save()
    return federation


# -- running one ------------------------------------------------------------------------------------------


def backend_for(federation: Federation) -> Backend:
    sites = list(federation.sites.select_related("project"))
    if federation.backend == "inprocess":
        return InProcessBackend({s.slug: project_site(s.project, name=s.slug, classes=federation.classes)
                                 for s in sites})
    from learners.federated.backends.celery_queue import CeleryQueueBackend
    from workbench.celery import app
    from workbench.site_celery import queues_alive

    def envelope(site: str, data: bytes) -> dict[str, Any]:
        return {"federation": federation.name,
                **request_sign(federation.signing_key, federation=federation.name, site=site, message=data)}

    return CeleryQueueBackend(app, {s.slug: {"queue": s.queue} for s in sites}, task_name=LOCAL_TRAIN_TASK,
                              envelope=envelope,
                              alive=lambda queues: queues_alive(str(app.conf.broker_url), queues))


def federated_run_create(*, federation_id: int, rounds: int) -> FederatedRun:
    federation = Federation.objects.filter(pk=federation_id).first()
    if federation is None:
        raise FederationInvalid(f"federation: no federation with id {federation_id}")
    if not isinstance(rounds, int) or isinstance(rounds, bool) or not 1 <= rounds <= 10_000:
        raise FederationInvalid("rounds: a whole number from 1 to 10000")
    federation_check(federation, list(federation.sites.select_related("project")))
    return FederatedRun.objects.create(federation=federation, rounds=rounds)


def federated_run_enqueue(run: FederatedRun) -> str:
    from workbench.celery import enqueue

    task_id = enqueue("workbench.federated_run", run_id=run.pk)
    FederatedRun.objects.filter(pk=run.pk).update(task_id=task_id)
    return task_id


def federated_run_cancel(run_id: int) -> None:
    FederatedRun.objects.filter(pk=run_id).exclude(status__in=TERMINAL).update(cancel_requested=True)


def federated_run_execute(*, run_id: int, progress: Progress | None = None, task_id: str = "") -> dict:
    """Run a queued federated run to the end, storing each round as it finishes.

    Cancelling is seen before each round. A failure marks the run failed with the error and re-raises.
    Its task delivered again after its worker was killed (`task_id` is the one the run records) ends
    the run as failed: its rounds already spent the sites' privacy budget, so it is not run twice.
    """
    with transaction.atomic():
        run = FederatedRun.objects.select_for_update().select_related("federation").get(pk=run_id)
        if run.status == MetaModelStatus.RUNNING and task_id and run.task_id == task_id:
            run.status, run.finished_at = MetaModelStatus.FAILED, timezone.now()
            run.error = ("the worker coordinating this run stopped before it finished; the rounds it stored are "
                         "kept, the run is not continued (it would spend the sites' privacy budget again): "
                         "start a new run")
            run.save(update_fields=["status", "finished_at", "error"])
            return _run_summary(run) | {"already": True}
        if run.status in TERMINAL or run.status == MetaModelStatus.RUNNING:
            return _run_summary(run) | {"already": True}
        run.status = MetaModelStatus.RUNNING
        run.save(update_fields=["status"])
    federation = run.federation
    backend = None
    try:
        plan = federation_check(federation, list(federation.sites.select_related("project")))
        plan.rounds = run.rounds
        FederatedRun.objects.filter(pk=run.pk).update(plan=_plan_summary(federation, plan))
        if federation.backend == "flower":
            return _flower_execute(run, federation, plan, progress)
        backend = backend_for(federation)
        coordinator = Coordinator(backend, plan)
        stored = 0

        def store_new_rounds() -> None:
            nonlocal stored
            for result in coordinator.results[stored:]:
                _round_store(run, result, coordinator)
            stored = len(coordinator.results)

        def should_stop() -> bool:
            store_new_rounds()
            return FederatedRun.objects.filter(pk=run.pk, cancel_requested=True).exists()

        if federation.mode == "async":
            coordinator.run_async(buffer_size=federation.buffer_size, aggregations=run.rounds, progress=progress,
                                  should_stop=should_stop)
        else:
            coordinator.run(progress=progress, should_stop=should_stop)
        store_new_rounds()
    except Exception as exc:
        FederatedRun.objects.filter(pk=run.pk).update(status=MetaModelStatus.FAILED, error=str(exc)[:2000],
                                                       finished_at=timezone.now())
        raise
    finally:
        if backend is not None:
            backend.close()
    cancelled = FederatedRun.objects.filter(pk=run.pk, cancel_requested=True).exists()
    FederatedRun.objects.filter(pk=run.pk).update(
        status=MetaModelStatus.CANCELLED if cancelled else MetaModelStatus.SUCCEEDED,
        weights=message_encode(Message(kind="weights", meta={"version": coordinator.version},
                                       arrays=coordinator.weights)),
        epsilon=coordinator.epsilon(), finished_at=timezone.now(),
    )
    return _run_summary(FederatedRun.objects.get(pk=run.pk))


def _round_store(run: FederatedRun, result: RoundResult, coordinator: Coordinator) -> None:
    payloads = [r.as_dict() for r in coordinator.audit.records if r.round == result.number]
    _round_record(run, result.as_dict(), payloads)


def _round_record(run: FederatedRun, result: dict[str, Any], payloads: list[dict[str, Any]]) -> None:
    """Store one round from `RoundResult.as_dict()` (here, or from a Flower ServerApp's log)."""
    FederatedRound.objects.update_or_create(run=run, number=result["number"], defaults=dict(
        version=result["version"], participants=result["participants"], dropouts=result["dropouts"],
        updates=result["updates"], aggregated=result["aggregated"], bytes_out=result["bytes_out"],
        bytes_in=result["bytes_in"], site_bytes_in=result["site_bytes_in"], metrics=result["metrics"],
        epsilon=result["epsilon"], seconds=result["wall_seconds"], payloads=payloads,
    ))
    if result["epsilon"] is not None:
        FederatedRun.objects.filter(pk=run.pk).update(epsilon=result["epsilon"])


def _flower_execute(run: FederatedRun, federation: Federation, plan: FederationPlan,
                    progress: Progress | None) -> dict:
    """A run on the federation's SuperLink: our ServerApp runs the rounds; its log lines are stored here.

    Failures inside the ServerApp come back as its error event; the run ends failed with it.
    """
    from django.conf import settings

    from learners.federated.coordinator import plan_as_dict
    from learners.federated.flower_run import FlowerRun, FlowerRunError, flower_home_write, run_config_for

    home = Path(settings.DATA_DIR) / "flower" / f"run-{run.pk}"
    flower_home_write(home, address=federation.flower_address,
                      root_certificates=federation.flower_root_certificates)
    flower = FlowerRun(home)
    sites = [site.slug for site in federation.sites.order_by("pk")]
    flower.start(run_config_for(federation=federation.name, sites=sites,
                                plan=plan_as_dict(plan, strategy_parameters=federation.strategy_parameters or {}),
                                hello_timeout=min(plan.timeout, 120.0)))
    final: dict[str, Any] | None = None
    done = 0
    for event in flower.events():
        kind = event.get("event")
        if kind == "hello":
            summary = {**_plan_summary(federation, plan), "flower_run_id": flower.run_id,
                       "flower_hello": {k: event.get(k) for k in ("nodes", "dead", "refused", "missing")}}
            FederatedRun.objects.filter(pk=run.pk).update(plan=summary)
        elif kind == "round":
            payloads = event.pop("payloads", [])
            _round_record(run, event, payloads)
            done += 1
            if progress is not None:
                progress("federated rounds", done, plan.rounds)
            if FederatedRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
                flower.stop()
                flower.close()
                break
        elif kind == "error":
            raise FlowerRunError(f"the Flower run {flower.run_id} failed: {event.get('error')}")
        elif kind == "final":
            final = event
    cancelled = FederatedRun.objects.filter(pk=run.pk, cancel_requested=True).exists()
    update: dict[str, Any] = {"status": MetaModelStatus.CANCELLED if cancelled else MetaModelStatus.SUCCEEDED,
                              "finished_at": timezone.now()}
    if final is not None:
        update["weights"] = base64.b64decode(final["weights"])
        update["epsilon"] = final.get("epsilon")
    FederatedRun.objects.filter(pk=run.pk).update(**update)
    return _run_summary(FederatedRun.objects.get(pk=run.pk))


def _plan_summary(federation: Federation, plan: FederationPlan) -> dict:
    return {"strategy": federation.strategy, "strategy_parameters": federation.strategy_parameters,
            "model": plan.model.as_dict(), "training": plan.training.__dict__, "backend": federation.backend,
            "mode": federation.mode, "secure_aggregation": plan.secure, "privacy": federation.privacy,
            "compression": plan.compression, "regions": [r.name for r in plan.regions or []]}


def _run_summary(run: FederatedRun) -> dict:
    rounds = list(run.round_records.order_by("number"))
    last = rounds[-1] if rounds else None
    return {"run_id": run.pk, "status": run.status, "rounds": len(rounds), "epsilon": run.epsilon,
            "metrics": last.metrics if last else {}, "dropouts": sum(len(r.dropouts) for r in rounds),
            "bytes_in": sum(r.bytes_in for r in rounds), "bytes_out": sum(r.bytes_out for r in rounds)}
