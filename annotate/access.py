"""Who may do what: the one place every interface asks.

Web views, the REST API, admin actions, management commands that act for a
user, and services that act on behalf of one all call these rules (in the
spirit of pretalx's ``rules.py``), so staff have the same powers everywhere
and an outsider meets the same answer everywhere.

The rules:

- **view** a project (its pages, items, model versions, progress): a member
  of any role, or staff.
- **annotate** (be served items, label, skip, undo): a member of any role.
  Staff without a membership do not annotate: labels, quotas and agreement
  are counted per membership.
- **manage** (settings, label set, budget, quotas, imports, members,
  retrain, warm start, dashboards, error texts of background work): the
  project's owner, or staff.
- **meta-train** on a set of projects: may manage every one of them; a
  meta-model is seen by whoever may view one of its source projects and
  cancelled by whoever may meta-train on all of them.

Management commands act for a user when given ``--user``; without it they
act as `OPERATOR`, the person at the server's shell, who may view and manage
everything (they can open the database anyway) but annotates nothing.

`project_for(user, pk, action)` is the one lookup. An outsider (not a member,
not staff, or anonymous) gets `ProjectNotFound` whether the project exists or
not, with the same message, so no answer tells existing ids from missing
ones; a member asking for more than their role allows gets `NotAllowed`.
"""
from __future__ import annotations

from enum import StrEnum
from typing import Iterable

from django.db.models import QuerySet

from annotate.errors import NotAllowed, ProjectNotFound
from annotate.models import Membership, Project, Role

ID_MAX = 2**63 - 1  # BigAutoField; larger ids cannot exist (and overflow SQLite's INTEGER)


class _Operator:
    """The person running a management command without --user: every power but annotating."""

    is_authenticated = True
    is_active = True
    is_staff = True
    pk = None

    def __str__(self) -> str:
        return "the operator"


OPERATOR = _Operator()


class Action(StrEnum):
    VIEW = "view"
    ANNOTATE = "annotate"
    MANAGE = "manage"


def _signed_in(user) -> bool:
    return user is not None and getattr(user, "is_authenticated", False) and getattr(user, "is_active", False)


def role_of(user, project: Project) -> str | None:
    """The user's role in the project (owner, annotator), or None; cached on the project object."""
    if not _signed_in(user) or user is OPERATOR:
        return None
    cache = project.__dict__.setdefault("_roles", {})
    if user.pk not in cache:
        cache[user.pk] = (
            Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()
        )
    return cache[user.pk]


def can_view(user, project: Project) -> bool:
    return _signed_in(user) and (user.is_staff or role_of(user, project) is not None)


def can_annotate(user, project: Project) -> bool:
    return role_of(user, project) is not None


def can_manage(user, project: Project) -> bool:
    return _signed_in(user) and (user.is_staff or role_of(user, project) == Role.OWNER)


def can_meta_train(user, projects: Iterable[Project]) -> bool:
    """Whether the user may meta-train on all of `projects` (and there is at least one)."""
    projects = list(projects)
    return bool(projects) and all(can_manage(user, p) for p in projects)


RULES = {Action.VIEW: can_view, Action.ANNOTATE: can_annotate, Action.MANAGE: can_manage}

_REFUSALS = {
    Action.ANNOTATE: "Only the project's members may annotate it.",
    Action.MANAGE: "Only the project's owners (or staff) may do this.",
}


def valid_id(value) -> int | None:
    """`value` as a database id (1 .. 2**63-1), or None when it cannot be one."""
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if 1 <= number <= ID_MAX else None


def project_for(user, pk, action: Action | str = Action.VIEW) -> Project:
    """The project `pk` if `user` may do `action` on it.

    Raises ProjectNotFound (the same for a missing project and one the user
    may not see) or NotAllowed (a member whose role does not allow `action`).
    """
    action = Action(action)
    number = valid_id(pk)
    project = None
    if number is not None and _signed_in(user):
        project = Project.objects.select_related("budget").filter(pk=number).first()
    if project is None or not can_view(user, project):
        raise ProjectNotFound()
    if not RULES[action](user, project):
        raise NotAllowed(_REFUSALS[action])
    return project


def meta_models_visible(user):
    """The meta-models the user may see: staff all; others those with a source project they are a member of."""
    from learners.models import MetaModel

    if not _signed_in(user):
        return MetaModel.objects.none()
    if user.is_staff:
        return MetaModel.objects.all()
    return MetaModel.objects.filter(source_projects__memberships__user=user).distinct()


def can_cancel_meta_model(user, meta_model) -> bool:
    return can_meta_train(user, meta_model.source_projects.all())


def user_for_command(username: str | None):
    """The user a management command acts for (`--user NAME`), or OPERATOR without one."""
    from django.contrib.auth import get_user_model

    if username is None:
        return OPERATOR
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise ValueError(f"--user: no active user named {username!r}")
    return user


def projects_visible(user) -> QuerySet[Project]:
    """The projects the user may view: every project for staff, their memberships' otherwise."""
    if not _signed_in(user):
        return Project.objects.none()
    if user.is_staff:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def projects_managed(user) -> QuerySet[Project]:
    """The projects the user may manage: every project for staff, those they own otherwise."""
    if not _signed_in(user):
        return Project.objects.none()
    if user.is_staff:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user, memberships__role=Role.OWNER).distinct()
