"""Creating projects with their label set, budget and owner."""
from __future__ import annotations

from django.db import transaction

from annotate.errors import WorkbenchError
from annotate.models import Budget, Label, Membership, Modality, Project, Role
from learners.catalog import DEFAULT_FEATURISER, InvalidChoice, choices_validate


def project_create(
    *, name: str, modality: str, labels: list[str], owner, query_strategy: str = "margin",
    estimator: str = "logistic_regression", featuriser: str | None = None, retrain_every: int = 10,
    overlap: int = 1, lease_seconds: int = 600, max_labels: int | None = None, description: str = "",
) -> Project:
    if modality not in Modality.values:
        raise WorkbenchError(f"modality {modality!r} is not one of {Modality.values}")
    featuriser = featuriser or DEFAULT_FEATURISER[modality]
    try:
        choices_validate(modality=modality, featuriser=featuriser, estimator=estimator, query_strategy=query_strategy)
    except InvalidChoice as exc:
        raise WorkbenchError(str(exc)) from None
    names = [l.strip() for l in labels]
    if len(names) < 2 or any(not n for n in names) or len(set(names)) != len(names):
        raise WorkbenchError(f"a label set needs at least two distinct, non-empty names; got {labels!r}")
    with transaction.atomic():
        project = Project.objects.create(
            name=name, description=description, modality=modality, query_strategy=query_strategy,
            estimator=estimator, featuriser=featuriser, retrain_every=retrain_every, overlap=overlap, lease_seconds=lease_seconds,
        )
        Label.objects.bulk_create([Label(project=project, name=n, position=i) for i, n in enumerate(names)])
        Budget.objects.create(project=project, max_labels=max_labels)
        Membership.objects.create(project=project, user=owner, role=Role.OWNER)
    return project


def membership_add(*, project: Project, user, role: str = Role.ANNOTATOR, quota: int | None = None) -> Membership:
    membership, _ = Membership.objects.update_or_create(
        project=project, user=user, defaults={"role": role, "quota": quota}
    )
    return membership


def project_overlap_apply(*, project: Project) -> int:
    """Recompute which items are done after the project's overlap changed.

    An item is done when it has `overlap` annotations, or when it came with an
    imported label (a seed label is ground truth). Returns how many items changed.
    """
    from django.db.models import Exists, OuterRef, Q

    from annotate.models import Annotation, AnnotationSource, Item

    imported = Annotation.objects.filter(item=OuterRef("pk"), source=AnnotationSource.IMPORT)
    items = Item.objects.filter(project=project).alias(imported=Exists(imported))
    should_be_done = Q(annotation_count__gte=project.overlap) | Q(imported=True)
    with transaction.atomic():
        opened = items.filter(done=True).exclude(should_be_done).update(done=False)
        closed = items.filter(done=False).filter(should_be_done).update(done=True)
    return opened + closed


def project_settings_update(
    *, project: Project, featuriser: str, estimator: str, query_strategy: str, retrain_every: int | None = None,
) -> list[str]:
    """Change how the project learns; takes effect at the next retrain, which is requested now.

    Returns the names of the fields that changed. Raises WorkbenchError for a
    choice that is unknown or does not fit the project, and changes nothing.
    """
    try:
        choices_validate(modality=project.modality, featuriser=featuriser, estimator=estimator,
                         query_strategy=query_strategy)
    except InvalidChoice as exc:
        raise WorkbenchError(str(exc)) from None
    if retrain_every is not None and retrain_every < 1:
        raise WorkbenchError(f"retrain every must be at least 1 label; got {retrain_every}")
    wanted = {"featuriser": featuriser, "estimator": estimator, "query_strategy": query_strategy}
    if retrain_every is not None:
        wanted["retrain_every"] = retrain_every
    changed = [k for k, v in wanted.items() if getattr(project, k) != v]
    if not changed:
        return []
    from learners.models import WorkKind
    from learners.services.work import work_request

    with transaction.atomic():
        Project.objects.filter(pk=project.pk).update(**{k: wanted[k] for k in changed})
        for k in changed:
            setattr(project, k, wanted[k])
        if set(changed) - {"retrain_every"}:
            work_request(project_id=project.pk, kind=WorkKind.RETRAIN, force=True,
                         reason=f"settings changed: {', '.join(changed)}")
    return changed
