"""The quality dashboard in a real browser: every number on the page equals one recomputed from the database.

The project (overlap 2, three annotators with known labels, times and skips,
three model versions) comes from tests/test_dashboard_quality.py; so do the
oracles, which use their own queries and sklearn, never the dashboard's
selectors. Headless Debian Chromium via the shared fixtures in tests/browser.py.
"""
from __future__ import annotations

import pytest
from django.template.defaultfilters import floatformat

from learners.models import ModelVersion
from tests.browser import ARTIFACTS, log_in
from tests.factories import make_user
from tests.test_dashboard_quality import (
    expected_fleiss,
    expected_pairs,
    expected_skip_rate,
    expected_throughput,
    seed_quality_project,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _number(locator, attribute: str) -> float:
    value = locator.get_attribute(attribute)
    assert value not in (None, ""), f"{attribute} is empty"
    return float(value)


def test_owner_reads_learning_curve_throughput_and_agreement_on_the_dashboard(live_server, new_page):
    from playwright.sync_api import expect

    owner = make_user("owner")
    project, _ = seed_quality_project(owner, benchmark_dataset="bbc_news")
    page = new_page()
    log_in(page, live_server, owner)
    response = page.goto(f"{live_server.url}/projects/{project.pk}/dashboard/quality/")
    assert response is not None and response.status == 200
    expect(page.get_by_role("heading", name="Progress and quality", level=1)).to_be_visible()
    expect(page.locator("figure.dashboard-chart svg[role=img]")).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-quality.png"), full_page=True)

    # Shown rounded half up (floatformat); the data attributes carry the full value.
    # Model versions: accuracy and labels spent of each, in the table and on the curve.
    versions = list(ModelVersion.objects.filter(project=project).defer("artifact", "stop_set").order_by("number"))
    assert len(versions) == 3
    for v in versions:
        row = page.locator(f'#model-versions tr[data-version="{v.number}"]')
        assert _number(row.locator("[data-accuracy]"), "data-accuracy") == pytest.approx(v.metrics["accuracy"])
        assert int(row.locator("[data-label-count]").get_attribute("data-label-count")) == v.label_count
        expect(row.locator("[data-accuracy]")).to_contain_text(floatformat(v.metrics["accuracy"], 3))
        point = page.locator(f'#learning-curve tr[data-version="{v.number}"]')
        assert int(point.locator("[data-labels]").get_attribute("data-labels")) == v.label_count
        assert _number(point.locator("[data-accuracy]"), "data-accuracy") == pytest.approx(v.metrics["accuracy"])

    # Throughput per annotator.
    expected = expected_throughput(project)
    assert page.locator("#throughput tbody tr[data-annotator]").count() == len(expected) == 3
    for name, want in expected.items():
        row = page.locator(f'#throughput tr[data-annotator="{name}"]')
        assert int(row.locator("[data-labels]").get_attribute("data-labels")) == want["labels"]
        assert _number(row.locator("[data-labels-per-hour]"), "data-labels-per-hour") == pytest.approx(
            want["labels_per_hour"], rel=1e-9)
        expect(row.locator("[data-labels-per-hour]")).to_have_text(floatformat(want["labels_per_hour"], 1))
        assert _number(row.locator("[data-median-seconds]"), "data-median-seconds") == pytest.approx(
            want["median_seconds"])
        assert _number(row.locator("[data-skip-rate]"), "data-skip-rate") == pytest.approx(want["skip_rate"])

    # Agreement: Fleiss' kappa over the overlapped items, Cohen's per pair.
    items, fleiss = expected_fleiss(project)
    assert items == 8
    assert _number(page.locator("#fleiss-kappa"), "data-value") == pytest.approx(fleiss, abs=1e-12)
    expect(page.locator("#fleiss-kappa")).to_contain_text(floatformat(fleiss, 3))
    assert int(page.locator("#overlapped-items").get_attribute("data-value")) == items
    pairs = expected_pairs(project)
    assert page.locator("#agreement-pairs tbody tr[data-pair]").count() == len(pairs) == 3
    for (a, b), (shared, kappa) in pairs.items():
        row = page.locator(f'#agreement-pairs tr[data-pair="{a}|{b}"]')
        assert int(row.locator("[data-items]").get_attribute("data-items")) == shared
        assert _number(row.locator("[data-kappa]"), "data-kappa") == pytest.approx(kappa, abs=1e-12)

    # Skip rate, and the stopping signal from the versions' kappas.
    assert _number(page.locator("#skip-rate"), "data-value") == pytest.approx(expected_skip_rate(project))
    kappas = [v.metrics["stop_kappa"] for v in versions if "stop_kappa" in v.metrics]
    expect(page.locator("#stopping-message")).to_contain_text(f"{len(kappas)} of 3 comparisons")
    # The baseline is drawn and explained.
    expect(page.locator("figure.dashboard-chart")).to_contain_text("random sampling, benchmark bbc_news")
    expect(page.locator("#baseline-note")).to_contain_text("held-out 30% test split")
