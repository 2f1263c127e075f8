"""Projects: list, create, read, and change how a project learns."""
from __future__ import annotations

from django.db.models import OuterRef, Subquery
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from annotate.access import Action, project_for
from annotate.api.bodies import StrictBody
from annotate.api.errors import error_response, error_responses
from annotate.errors import WorkbenchError
from annotate.models import Membership, Modality, Project
from annotate.services.projects import project_create, project_settings_update
from learners.catalog import ESTIMATORS, FEATURISERS, STRATEGIES

INT_MAX = 2_147_483_647  # PositiveIntegerField's upper bound on PostgreSQL
LABEL_NAME_CHARS = 100


class ProjectOut(serializers.ModelSerializer):
    labels = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name",
                                          help_text="Label names in button order.")
    role = serializers.SerializerMethodField(help_text="Your role in the project; null for staff who are not members.")

    class Meta:
        model = Project
        fields = ["id", "name", "description", "modality", "featuriser", "estimator", "query_strategy",
                  "retrain_every", "overlap", "lease_seconds", "label_count", "cost_spent", "created_at",
                  "labels", "role"]
        read_only_fields = fields

    def get_role(self, project: Project) -> str | None:
        if hasattr(project, "my_role"):
            return project.my_role
        user = self.context["request"].user
        return Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()


class ProjectUpdated(ProjectOut):
    changed = serializers.ListField(child=serializers.CharField(), read_only=True,
                                    help_text="Settings that changed; a retrain was requested unless only "
                                              "retrain_every changed.")

    class Meta(ProjectOut.Meta):
        fields = [*ProjectOut.Meta.fields, "changed"]
        read_only_fields = fields


class ProjectIn(StrictBody):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    modality = serializers.ChoiceField(choices=Modality.choices)
    labels = serializers.ListField(child=serializers.CharField(max_length=LABEL_NAME_CHARS), min_length=2,
                                   max_length=1000, help_text="At least two distinct label names, in button order.")
    query_strategy = serializers.ChoiceField(choices=list(STRATEGIES), default="margin")
    estimator = serializers.ChoiceField(choices=list(ESTIMATORS), default="logistic_regression")
    featuriser = serializers.ChoiceField(choices=list(FEATURISERS), required=False,
                                         help_text="Default: the modality's usual featuriser.")
    retrain_every = serializers.IntegerField(min_value=1, max_value=INT_MAX, default=10)
    overlap = serializers.IntegerField(min_value=1, max_value=32_767, default=1)
    lease_seconds = serializers.IntegerField(min_value=1, max_value=INT_MAX, default=600)
    max_labels = serializers.IntegerField(min_value=0, max_value=2_000_000_000, required=False, allow_null=True,
                                          default=None, help_text="Label budget; null means no limit.")


class ProjectSettingsIn(StrictBody):
    """How the project learns; any subset, the rest stays as it is."""

    featuriser = serializers.ChoiceField(choices=list(FEATURISERS), required=False)
    estimator = serializers.ChoiceField(choices=list(ESTIMATORS), required=False)
    query_strategy = serializers.ChoiceField(choices=list(STRATEGIES), required=False)
    retrain_every = serializers.IntegerField(min_value=1, max_value=INT_MAX, required=False)


def _projects_for(user):
    """The user's projects (every project for staff), each with the user's role."""
    role = Membership.objects.filter(project=OuterRef("pk"), user=user).values("role")[:1]
    projects = Project.objects.annotate(my_role=Subquery(role))
    if not user.is_staff:
        projects = projects.filter(memberships__user=user)
    return projects.prefetch_related("labels").order_by("name", "id")


@extend_schema(tags=["projects"])
class ProjectList(GenericAPIView):
    serializer_class = ProjectOut

    @extend_schema(summary="Projects you are a member of (staff: every project)",
                   responses={200: ProjectOut(many=True), **error_responses(400, 404)})
    def get(self, request):
        page = self.paginate_queryset(_projects_for(request.user))
        return self.get_paginated_response(ProjectOut(page, many=True, context={"request": request}).data)

    @extend_schema(summary="Create a project; you become its owner", request=ProjectIn,
                   responses={201: ProjectOut, **error_responses(400)})
    def post(self, request):
        data = ProjectIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            project = project_create(owner=request.user, **data.validated_data)
        except WorkbenchError as exc:
            return error_response(exc)
        return Response(ProjectOut(project, context={"request": request}).data, status=status.HTTP_201_CREATED)


@extend_schema(tags=["projects"])
class ProjectDetail(GenericAPIView):
    serializer_class = ProjectOut

    @extend_schema(summary="A project", responses={200: ProjectOut, **error_responses(404)})
    def get(self, request, pk: int):
        project = project_for(request.user, pk, Action.VIEW)
        return Response(ProjectOut(project, context={"request": request}).data)

    @extend_schema(summary="Change how the project learns (owner)", request=ProjectSettingsIn,
                   responses={200: ProjectUpdated, **error_responses(400, 403, 404)})
    def patch(self, request, pk: int):
        project = project_for(request.user, pk, Action.MANAGE)
        data = ProjectSettingsIn(data=request.data)
        data.is_valid(raise_exception=True)
        wanted = {k: data.validated_data.get(k, getattr(project, k))
                  for k in ("featuriser", "estimator", "query_strategy")}
        try:
            changed = project_settings_update(project=project, retrain_every=data.validated_data.get("retrain_every"),
                                              **wanted)
        except WorkbenchError as exc:
            return error_response(exc)
        project.changed = changed
        return Response(ProjectUpdated(project, context={"request": request}).data)
