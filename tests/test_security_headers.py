"""Every page carries the Content-Security-Policy, and no page needs what the policy forbids."""
import re

import pytest
from django.urls import reverse

from annotate.charts import Series, line_chart_svg
from tests.factories import make_user
from workbench.security import policy_header

# An executable inline script: a <script> without src= that is not a JSON data block.
INLINE_SCRIPT = re.compile(r"<script\b(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[a-z][^>]*\son[a-z]+\s*=", re.IGNORECASE)
PROJECT_PAGES = ("project-detail", "annotate", "project-settings", "import-upload", "dashboard-quality",
                 "dashboard-budget")


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


def assert_runs_under_the_policy(response) -> None:
    """The page's scripts are all files from our origin, and it has no on*= handlers."""
    html = response.content.decode()
    policy = directives(response)
    assert policy["script-src"] == ["'self'"], policy
    assert not INLINE_SCRIPT.findall(html), INLINE_SCRIPT.findall(html)
    assert not INLINE_HANDLER.findall(html), INLINE_HANDLER.findall(html)
    for src in re.findall(r"<script[^>]*\bsrc=\"([^\"]+)\"", html):
        assert src.startswith("/static/"), src


@pytest.mark.django_db
def test_login_page_carries_the_policy(client):
    response = client.get(reverse("login"))
    assert response.status_code == 200
    policy = directives(response)
    assert policy["default-src"] == ["'self'"] and policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert_runs_under_the_policy(response)


@pytest.mark.django_db
def test_every_project_page_runs_under_the_policy(client, owner, project):
    client.force_login(owner)
    for response in [client.get(reverse("project-list")), client.get(reverse("meta-model-list"))] + [
            client.get(reverse(name, args=[project.pk])) for name in PROJECT_PAGES]:
        assert response.status_code == 200, response.request["PATH_INFO"]
        assert_runs_under_the_policy(response)
        if "dashboard" in response.request["PATH_INFO"]:
            assert "<svg" in response.content.decode()  # charts inline: allowed, their style="" too


@pytest.mark.django_db
def test_admin_and_api_responses_carry_the_policy(client, project):
    staff = make_user("admin-user")
    staff.is_staff = staff.is_superuser = True
    staff.save()
    client.force_login(staff)
    admin = client.get(reverse("admin:index"))
    assert admin.status_code == 200
    assert_runs_under_the_policy(admin)
    api = client.get(reverse("api-projects"), HTTP_ACCEPT="application/json")
    assert api.status_code == 200 and directives(api)["script-src"] == ["'self'"]


@pytest.mark.django_db
def test_swagger_page_alone_may_run_its_inline_start_script(client):
    response = client.get(reverse("api-docs"))
    html = response.content.decode()
    assert response.status_code == 200 and INLINE_SCRIPT.search(html)  # drf-spectacular's start-up script
    policy = directives(response)
    assert policy["script-src"] == ["'self'", "'unsafe-inline'"]
    assert policy["default-src"] == ["'self'"] and policy["object-src"] == ["'none'"]


def test_charts_need_inline_styles_and_the_policy_allows_only_styles_inline(settings):
    svg = line_chart_svg([Series("accuracy", [1, 2, 3], [0.5, 0.6, 0.7])], title="t", x_label="x", y_label="y")
    assert 'style="' in svg and "<style" in svg  # matplotlib styles its lines this way
    policy = settings.CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" in policy["style-src"] and "'unsafe-inline'" not in policy["script-src"]


def test_policy_header_writes_directives_in_order():
    assert policy_header({"default-src": ["'self'"], "img-src": ["'self'", "data:"], "upgrade-insecure-requests": []}) \
        == "default-src 'self'; img-src 'self' data:; upgrade-insecure-requests"
