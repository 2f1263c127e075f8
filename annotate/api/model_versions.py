"""Model versions of a project: what each retrain learned and how well, never the fitted model itself."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from annotate.access import Action, project_for
from annotate.api.errors import error_responses
from annotate.models import Project
from learners.models import ModelVersion

# The pickled estimator and the stop-set predictions can be megabytes a row; nobody outside the workers reads them.
HEAVY_FIELDS = ("artifact", "stop_set")


class ModelVersionOut(serializers.ModelSerializer):
    class Meta:
        model = ModelVersion
        fields = ["number", "created_at", "estimator", "query_strategy", "featuriser", "trained_on", "label_count",
                  "metrics", "items_scored", "train_seconds", "score_seconds"]
        read_only_fields = fields


def _versions(project: Project):
    return ModelVersion.objects.filter(project=project).defer(*HEAVY_FIELDS).order_by("-number")


@extend_schema(tags=["model versions"])
class ModelVersionList(GenericAPIView):
    serializer_class = ModelVersionOut

    @extend_schema(summary="Model versions, newest first", responses={200: ModelVersionOut(many=True),
                                                                     **error_responses(400, 404)})
    def get(self, request, pk: int):
        page = self.paginate_queryset(_versions(project_for(request.user, pk, Action.VIEW)))
        return self.get_paginated_response(ModelVersionOut(page, many=True).data)


@extend_schema(tags=["model versions"])
class ModelVersionDetail(GenericAPIView):
    serializer_class = ModelVersionOut

    @extend_schema(summary="One model version by its number", responses={200: ModelVersionOut,
                                                                        **error_responses(404)})
    def get(self, request, pk: int, number: int):
        project = project_for(request.user, pk, Action.VIEW)
        version = _versions(project).filter(number=number).first()
        if version is None:
            raise NotFound(f"Project {project.pk} has no model version {number}.")
        return Response(ModelVersionOut(version).data)
