"""Changing a project's label set: add, rename, reorder and delete labels.

Annotations point at their label row (PROTECT), so renaming or reordering a
label keeps every annotation, and a label that any annotation uses cannot be
deleted (rename it instead). Each change locks the project row first, the
lock `annotation_create` takes before it reads the label set, so a label is
never deleted under an annotation being stored.
"""
from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Max

from annotate.errors import WorkbenchError
from annotate.models import Annotation, Label, Project

# A classifier needs two classes; project_create asks for as many.
MIN_LABELS = 2
MAX_NAME_CHARS = Label._meta.get_field("name").max_length
MAX_POSITION = 32_767  # PositiveSmallIntegerField on every database

_UNSET = object()


class LabelInvalid(WorkbenchError):
    """A name or position that cannot be stored; the message says which and why."""


class LabelInUse(WorkbenchError):
    """The label has annotations, so deleting it would lose them."""


class LabelSetTooSmall(WorkbenchError):
    """Deleting the label would leave fewer than MIN_LABELS."""


def _lock_project(project: Project) -> Project:
    return Project.objects.select_for_update(no_key=True, of=("self",)).get(pk=project.pk)


def _name_clean(project: Project, name, *, exclude: int | None = None) -> str:
    if not isinstance(name, str) or not name.strip():
        raise LabelInvalid(f"name: a label needs a non-empty name, got {name!r}")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise LabelInvalid(f"name: at most {MAX_NAME_CHARS} characters, got {len(name)}")
    if "\x00" in name:
        raise LabelInvalid("name: must not contain NUL characters")
    if Label.objects.filter(project=project, name=name).exclude(pk=exclude).exists():
        raise LabelInvalid(f"name: the project already has a label {name!r}")
    return name


def _position_clean(position) -> int:
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= MAX_POSITION:
        raise LabelInvalid(f"position: expected a whole number from 0 to {MAX_POSITION}, got {position!r}")
    return position


def label_create(*, project: Project, name: str, position: int | None = None) -> Label:
    """Add a label to the project's set, by default after the last one."""
    try:
        with transaction.atomic():
            project = _lock_project(project)
            name = _name_clean(project, name)
            if position is None:
                last = Label.objects.filter(project=project).aggregate(last=Max("position"))["last"]
                position = 0 if last is None else min(last + 1, MAX_POSITION)
            return Label.objects.create(project=project, name=name, position=_position_clean(position))
    except IntegrityError:  # the unique (project, name) constraint, should a writer slip past the lock
        raise LabelInvalid(f"name: the project already has a label {name!r}") from None


def label_update(*, label: Label, name=_UNSET, position=_UNSET) -> Label:
    """Rename and/or move a label; its annotations follow it.

    A rename asks for a retrain when the label has annotations: the current
    model predicts class names, and scoring with it would not find the old name.
    """
    from learners.models import WorkKind
    from learners.services.work import work_request

    changes = {}
    try:
        with transaction.atomic():
            project = _lock_project(label.project)
            if name is not _UNSET:
                changes["name"] = _name_clean(project, name, exclude=label.pk)
            if position is not _UNSET:
                changes["position"] = _position_clean(position)
            changes = {k: v for k, v in changes.items() if getattr(label, k) != v}
            if not changes:
                return label
            Label.objects.filter(pk=label.pk).update(**changes)
            if "name" in changes and Annotation.objects.filter(label=label).exists():
                work_request(project_id=project.pk, kind=WorkKind.RETRAIN, force=True,
                             reason=f"label {label.name!r} renamed to {changes['name']!r}")
    except IntegrityError:
        raise LabelInvalid(f"name: the project already has a label {changes.get('name')!r}") from None
    for field, value in changes.items():
        setattr(label, field, value)
    return label


def label_delete(*, label: Label) -> None:
    """Delete a label that no annotation uses, keeping at least MIN_LABELS in the set.

    Items the model predicted as this label keep their priority and lose the
    prediction until the next retrain.
    """
    with transaction.atomic():
        project = _lock_project(label.project)
        used = Annotation.objects.filter(label=label).count()
        if used:
            raise LabelInUse(
                f"label {label.name!r} is used by {used} annotation{'s' if used != 1 else ''}, so it cannot be "
                "deleted; rename it instead, or undo those annotations first"
            )
        if Label.objects.filter(project=project).count() <= MIN_LABELS:
            raise LabelSetTooSmall(
                f"label {label.name!r} cannot be deleted: a project needs at least {MIN_LABELS} labels"
            )
        label.delete()
