"""Who may see and change a project through the API.

An outsider gets 404 for every project URL, so the API does not tell them a
project exists; a member who is not an owner gets 403 on owner-only
operations; staff may read and manage every project. Staff do not annotate
without a membership: the queue endpoints ask the queue service, which
checks membership itself.
"""
from __future__ import annotations

from rest_framework.exceptions import NotFound, PermissionDenied

from annotate.models import Membership, Project, Role


def project_get(request, pk: int, *, manage: bool = False) -> Project:
    """The project `pk` if the user may read it (`manage`: may change it); raises NotFound or PermissionDenied."""
    project = Project.objects.select_related("budget").filter(pk=pk).first()
    if project is None:
        raise NotFound("No such project.")
    if request.user.is_staff:
        return project
    role = Membership.objects.filter(project=project, user=request.user).values_list("role", flat=True).first()
    if role is None:
        raise NotFound("No such project.")
    if manage and role != Role.OWNER:
        raise PermissionDenied("Only the project's owner (or staff) may do this.")
    return project
