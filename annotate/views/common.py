from django.http import Http404
from django.shortcuts import get_object_or_404

from annotate.models import Membership, Project, Role


def project_for_member(request, pk: int, *, owner: bool = False) -> tuple[Project, Membership]:
    """The project if the user is a member (an owner when `owner`); 404 otherwise,
    so outsiders cannot even learn that a project exists."""
    project = get_object_or_404(Project.objects.select_related("budget"), pk=pk)
    membership = Membership.objects.filter(project=project, user=request.user).first()
    if membership is None or (owner and membership.role != Role.OWNER):
        raise Http404("No such project")
    return project, membership


def project_for_manager(request, pk: int) -> Project:
    """The project if the user owns it or is staff (budget and progress dashboards); 404 otherwise."""
    project = get_object_or_404(Project.objects.select_related("budget"), pk=pk)
    if request.user.is_staff:
        return project
    if not Membership.objects.filter(project=project, user=request.user, role=Role.OWNER).exists():
        raise Http404("No such project")
    return project
