"""Creating projects with their label set, budget and owner."""
from __future__ import annotations

from django.db import transaction

from annotate.errors import WorkbenchError
from annotate.models import Budget, Label, Membership, Modality, Project, Role


def project_create(
    *, name: str, modality: str, labels: list[str], owner, query_strategy: str = "margin",
    estimator: str = "logistic_regression", retrain_every: int = 10, overlap: int = 1,
    lease_seconds: int = 600, max_labels: int | None = None, description: str = "",
) -> Project:
    # Imported here: the registries load scikit-learn, which web processes never need.
    from learners.ml.estimators import ESTIMATORS
    from learners.ml.strategies import UTILITIES

    if modality not in Modality.values:
        raise WorkbenchError(f"modality {modality!r} is not one of {Modality.values}")
    if query_strategy not in UTILITIES:
        raise WorkbenchError(f"query strategy {query_strategy!r} is not one of {sorted(UTILITIES)}")
    if estimator not in ESTIMATORS:
        raise WorkbenchError(f"estimator {estimator!r} is not one of {sorted(ESTIMATORS)}")
    names = [l.strip() for l in labels]
    if len(names) < 2 or any(not n for n in names) or len(set(names)) != len(names):
        raise WorkbenchError(f"a label set needs at least two distinct, non-empty names; got {labels!r}")
    with transaction.atomic():
        project = Project.objects.create(
            name=name, description=description, modality=modality, query_strategy=query_strategy,
            estimator=estimator, retrain_every=retrain_every, overlap=overlap, lease_seconds=lease_seconds,
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
