"""The progress and quality dashboard (owners and staff): learning curve, versions, throughput, agreement."""
from django.http import Http404, HttpResponse
from django.shortcuts import render

from annotate.access import Action
from annotate.charts import Series, csv_text, line_chart_svg
from annotate.dashboards.quality import CSV_TABLES, quality_csv, quality_dashboard
from annotate.views.common import project_view


def _learning_curve_svg(curve: dict) -> str:
    """Accuracy per model version against labels spent; the benchmark's random curve dashed (std in the table)."""
    points = curve["points"]
    series = [
        Series("this project (cross-validated)", [p["labels"] for p in points], [p["accuracy"] for p in points],
               markers=True),
    ]
    baseline = curve["baseline"]
    if baseline is not None:
        series.append(Series(f"random sampling, benchmark {baseline.dataset} (held-out test)",
                             baseline.labels, baseline.accuracy, dashed=True))
    return line_chart_svg(series, title="Learning curve", x_label="labels", y_label="accuracy")


@project_view(Action.MANAGE)
def dashboard_quality(request, project):
    data = quality_dashboard(project)
    data["chart"] = _learning_curve_svg(data["learning_curve"])
    return render(request, "annotate/dashboard_quality.html", data)


@project_view(Action.MANAGE)
def dashboard_quality_csv(request, project, table: str):
    if table not in CSV_TABLES:
        raise Http404(f"No table {table!r}")
    header, rows = quality_csv(project, table)
    response = HttpResponse(csv_text(header, rows), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="project-{project.pk}-{table}.csv"'
    return response
