"""A project's budget and its members' quotas (owner or staff), written through annotate.services.budgets.

Values are handed to the service as sent: it is the one place that says
what a budget may hold, with the same messages the dashboard form shows.
The queue reads both at every `next`, so a change applies to the next item served.
"""
from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.generics import GenericAPIView
from rest_framework.response import Response

from annotate.access import Action, project_for
from annotate.api.bodies import StrictBody
from annotate.api.errors import error_response, error_responses
from annotate.models import Membership, Project
from annotate.selectors import budget_left
from annotate.services.budgets import BudgetInvalid, budget_update, quota_update


class _ServiceValidated(serializers.Field):
    """A value passed on as sent; the budget service validates it and names the field when it refuses."""

    def __init__(self, **kwargs):
        super().__init__(allow_null=True, **kwargs)

    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return value


@extend_schema_field({"type": "integer", "minimum": 0, "maximum": 2_000_000_000, "nullable": True,
                      "description": "A number of labels; null means no limit."})
class LabelCountField(_ServiceValidated):
    pass


@extend_schema_field({"type": "string", "format": "decimal", "pattern": r"^\d{1,10}(\.\d{1,2})?$",
                      "nullable": True, "description": "An amount with at most 2 decimals (a JSON number is "
                                                       "accepted too); null means no limit."})
class AmountField(_ServiceValidated):
    pass


class BudgetIn(StrictBody):
    max_labels = LabelCountField()
    cost_per_label = AmountField(help_text="Price of one label; 0 for unpaid labels (null is refused).")
    max_cost = AmountField()


class BudgetOut(serializers.Serializer):
    max_labels = serializers.IntegerField(allow_null=True)
    cost_per_label = serializers.CharField()
    max_cost = serializers.CharField(allow_null=True)
    labels_spent = serializers.IntegerField(help_text="Labels given by annotators so far.")
    cost_spent = serializers.CharField()
    labels_left = serializers.IntegerField(allow_null=True, help_text="null: no label limit.")
    cost_left = serializers.CharField(allow_null=True, help_text="null: no cost limit.")


def budget_json(project: Project) -> dict:
    left = budget_left(project)
    return {
        "max_labels": left["max_labels"], "cost_per_label": left.get("cost_per_label", "0.00"),
        "max_cost": left["max_cost"], "labels_spent": project.label_count, "cost_spent": left["cost_spent"],
        "labels_left": left["labels_left"], "cost_left": left["cost_left"],
    }


@extend_schema(tags=["budgets"])
class BudgetDetail(GenericAPIView):
    serializer_class = BudgetOut

    @extend_schema(summary="The budget: limits, spent and left (owner or staff)",
                   responses={200: BudgetOut, **error_responses(403, 404)})
    def get(self, request, pk: int):
        return Response(budget_json(project_for(request.user, pk, Action.MANAGE)))

    @extend_schema(summary="Replace the budget (owner or staff): every field, null for no limit", request=BudgetIn,
                   responses={200: BudgetOut, **error_responses(400, 403, 404)})
    def put(self, request, pk: int):
        return self._update(request, pk, partial=False)

    @extend_schema(summary="Change some budget fields (owner or staff)", request=BudgetIn,
                   responses={200: BudgetOut, **error_responses(400, 403, 404)})
    def patch(self, request, pk: int):
        return self._update(request, pk, partial=True)

    def _update(self, request, pk: int, *, partial: bool) -> Response:
        project = project_for(request.user, pk, Action.MANAGE)
        data = BudgetIn(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        try:
            budget_update(project=project, **data.validated_data)
        except BudgetInvalid as exc:
            return error_response(exc)
        return Response(budget_json(project))


class MemberOut(serializers.ModelSerializer):
    user_id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["user_id", "username", "role", "quota", "label_count"]
        read_only_fields = fields


class QuotaIn(StrictBody):
    quota = LabelCountField(help_text="Most labels this member may give; null means no quota.")


def _members(project: Project):
    return Membership.objects.filter(project=project).select_related("user").order_by("user__username", "id")


@extend_schema(tags=["budgets"])
class MemberList(GenericAPIView):
    serializer_class = MemberOut

    @extend_schema(summary="Members with their role, quota and labels given (owner or staff)",
                   responses={200: MemberOut(many=True), **error_responses(400, 403, 404)})
    def get(self, request, pk: int):
        page = self.paginate_queryset(_members(project_for(request.user, pk, Action.MANAGE)))
        return self.get_paginated_response(MemberOut(page, many=True).data)


@extend_schema(tags=["budgets"])
class MemberDetail(GenericAPIView):
    serializer_class = MemberOut

    @extend_schema(summary="Set a member's label quota (owner or staff)", request=QuotaIn,
                   responses={200: MemberOut, **error_responses(400, 403, 404)})
    def patch(self, request, pk: int, user_id: int):
        project = project_for(request.user, pk, Action.MANAGE)
        if not Membership.objects.filter(project=project, user_id=user_id).exists():
            raise NotFound(f"User {user_id} is not a member of project {project.pk}.")
        data = QuotaIn(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            quota_update(project=project, user_id=user_id, quota=data.validated_data["quota"])
        except BudgetInvalid as exc:
            return error_response(exc)
        return Response(MemberOut(_members(project).get(user_id=user_id)).data)
