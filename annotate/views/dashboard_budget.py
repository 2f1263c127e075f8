"""The budget dashboard: where the labelling money goes, and the forms that change the budget and quotas.

Owners and staff only (`annotate.access.can_manage`). Writes go through
`annotate.services.budgets`; the queue reads the budget on every request, so
a saved change applies to the next item served.
"""
from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render

from annotate.access import ID_MAX, Action
from annotate.charts import Marker, Series, csv_text, line_chart_svg
from annotate.dashboards.budget import budget_dashboard
from annotate.selectors import budget_limits
from annotate.services.budgets import BudgetInvalid, budget_update, quota_update
from annotate.views.common import FORM, project_view


class BudgetForm(forms.Form):
    """Parses the budget form; the ranges and precision are checked by `budget_update`."""

    max_labels = forms.IntegerField(
        required=False, label="Most labels", help_text="Labels annotators may give in all. Empty: no limit.",
        widget=forms.NumberInput(attrs={"min": 0, "step": 1}),
    )
    cost_per_label = forms.DecimalField(
        required=False, label="Cost per label", help_text="Charged for each label from now on; 0 for unpaid labels.",
        widget=forms.NumberInput(attrs={"min": 0, "step": "0.01"}),
    )
    max_cost = forms.DecimalField(
        required=False, label="Most cost", help_text="Money that may be spent in all. Empty: no limit.",
        widget=forms.NumberInput(attrs={"min": 0, "step": "0.01"}),
    )


class QuotaForm(forms.Form):
    user = forms.IntegerField(min_value=1, max_value=ID_MAX, widget=forms.HiddenInput)
    quota = forms.IntegerField(required=False, widget=forms.NumberInput(attrs={"min": 0, "step": 1}))


def _service_error(form: forms.Form, exc: BudgetInvalid) -> None:
    """Show a service refusal next to the field it names ("max_cost: ..."), else above the form."""
    field, _, detail = str(exc).partition(": ")
    if field in form.fields and detail:
        form.add_error(field, detail)
    else:
        form.add_error(None, str(exc))


def _percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{fraction * 100:.1f}%"


def _none_text(value) -> str:
    return "no limit" if value is None else str(value)


def _burn_down_svg(data: dict) -> str:
    points, forecast, budget = data["burn_down"], data["forecast"], data["budget"]
    days = [p["day"] for p in points]
    series = [Series("labels given (total)", days, [p["labels_total"] for p in points], markers=True)]
    markers = []
    if budget["max_labels"] is not None:
        markers.append(Marker(f"label limit ({budget['max_labels']})", y=budget["max_labels"]))
    if data["left"]["labels_by_cost"] is not None:
        cap = data["spent"]["labels"] + data["left"]["labels_by_cost"]
        markers.append(Marker(f"cost limit ({budget['max_cost']} = {cap} labels)", y=cap))
    if forecast["status"] == "forecast":
        series.append(Series(
            "forecast at the current rate", [data["today"], forecast["day"]],
            [forecast["labels_total"], forecast["labels_total"] + forecast["labels_left"]], dashed=True,
        ))
        markers.append(Marker(f"runs out {forecast['day'].isoformat()}", x=forecast["day"]))
    elif forecast["status"] == "spent" and forecast["day"] is not None:
        markers.append(Marker(f"spent {forecast['day'].isoformat()}", x=forecast["day"]))
    return line_chart_svg(series, title="Labels given against the budget", x_label="Day (UTC)",
                          y_label="Labels", markers=markers, y_min=0)


def _annotator_rows_with_forms(data: dict, quota_form: QuotaForm | None) -> list[dict]:
    """The annotator rows, each with what its quota input shows and its error after a refused POST."""
    failed_user = None
    if quota_form is not None and quota_form.is_bound and quota_form.errors:
        failed_user = quota_form.data.get("user")
    rows = []
    for row in data["annotators"]:
        row = dict(row, quota_input="" if row["quota"] is None else row["quota"], quota_error="",
                   share_of_labels_text=_percent(row["share_of_labels"]),
                   share_of_spend_text=_percent(row["share_of_spend"]))
        if failed_user is not None and str(row["user_id"]) == str(failed_user):
            row["quota_input"] = quota_form.data.get("quota", "")
            row["quota_error"] = " ".join(quota_form.errors.get("quota", []) + quota_form.non_field_errors())
        rows.append(row)
    return rows


def _render(request, project, budget_form: BudgetForm, quota_form: QuotaForm | None = None):
    data = budget_dashboard(project)
    rows = _annotator_rows_with_forms(data, quota_form)
    quota_unplaced = []
    if quota_form is not None and quota_form.errors and not any(r["quota_error"] for r in rows):
        quota_unplaced = [e for errors in quota_form.errors.values() for e in errors]
    return render(request, "annotate/dashboard_budget.html", {
        "project": project, "data": data, "annotators": rows, "chart": _burn_down_svg(data),
        "budget_form": budget_form, "quota_unplaced": quota_unplaced,
    })


@project_view(Action.MANAGE, FORM)
def dashboard_budget(request, project):
    if request.method == "GET":
        return _render(request, project, BudgetForm(initial=budget_limits(project)))
    which = request.POST.get("form")
    if which == "budget":
        form = BudgetForm(request.POST)
        if form.is_valid():
            try:
                budget = budget_update(project=project, **form.cleaned_data)
            except BudgetInvalid as exc:
                _service_error(form, exc)
            else:
                messages.success(request, (
                    f"Budget saved: most labels {_none_text(budget.max_labels)}, cost per label "
                    f"{budget.cost_per_label}, most cost {_none_text(budget.max_cost)}. "
                    "The queue applies it to the next item it serves."))
                return redirect("dashboard-budget", pk=project.pk)
        return _render(request, project, form)
    if which == "quota":
        form = QuotaForm(request.POST)
        if form.is_valid():
            try:
                membership = quota_update(project=project, user_id=form.cleaned_data["user"],
                                          quota=form.cleaned_data["quota"])
            except BudgetInvalid as exc:
                _service_error(form, exc)
            else:
                messages.success(request, (
                    f"Quota of {membership.user.get_username()} saved: {_none_text(membership.quota)}. "
                    "The queue applies it to the next item it serves."))
                return redirect("dashboard-budget", pk=project.pk)
        return _render(request, project, BudgetForm(initial=budget_limits(project)), form)
    return HttpResponseBadRequest("Unknown form: expected form=budget or form=quota.")


CSV_TABLES = {
    "burn-down": (
        ["day", "labels", "cost", "labels_total", "cost_total", "labels_left"],
        lambda data: [[p["day"], p["labels"], p["cost"], p["labels_total"], p["cost_total"], p["labels_left"]]
                      for p in data["burn_down"]],
    ),
    "annotators": (
        ["username", "role", "labels", "cost", "quota", "quota_left", "share_of_labels", "share_of_spend",
         "seconds_mean"],
        lambda data: [[r["username"], r["role"], r["labels"], r["cost"], r["quota"], r["quota_left"],
                       _fraction(r["share_of_labels"]), _fraction(r["share_of_spend"]), _seconds(r["seconds_mean"])]
                      for r in data["annotators"]],
    ),
}


def _fraction(value: float | None) -> str | None:
    return None if value is None else f"{value:.4f}"


def _seconds(value: float | None) -> str | None:
    return None if value is None else f"{value:.1f}"


@project_view(Action.MANAGE)
def dashboard_budget_csv(request, project, table: str):
    if table not in CSV_TABLES:
        raise Http404(f"No table {table!r}; one of {', '.join(CSV_TABLES)}")
    header, rows = CSV_TABLES[table]
    response = HttpResponse(csv_text(header, rows(budget_dashboard(project))), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="project-{project.pk}-budget-{table}.csv"'
    return response
