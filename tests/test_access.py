"""Who may do what, at every URL: one table, asked of every interface (annotate.access).

Every route of workbench/urls.py, annotate/urls.py, annotate/api/urls.py and
the admin's pages for our objects, with every method it accepts and one it
does not, is called by each persona, against the persona's own project
("own") and against another project ("other"). `ROUTES` gives the status
each persona must get on its own project; on the other project, whose only
member is a stranger, the owner and the teammate are outsiders there and
must get what the outsider gets, while staff and anonymous get what they get
on their own project. `test_every_route_is_in_the_table` fails when a URL is
added without a row, and `test_an_outsider_cannot_tell_a_project_from_a_missing_one`
compares the outsider's answer for the other project with the answer for an
id that names nothing, byte for byte.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
from django.contrib.admin.sites import site as admin_site
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from annotate.models import ImportJob, Label
from learners.models import MetaModel, MetaModelStatus, ModelVersion
from tests.conftest import redis_client
from tests.factories import add_annotator, add_items, make_project, make_user

PERSONAS = ("owner", "teammate", "staff", "outsider", "anonymous")
WEB_LOGIN = 302  # a signed-out browser is sent to the login page
API_LOGIN = 401  # a signed-out script is told to authenticate (token auth answers first)


def everyone(status: int, anonymous: int) -> dict[str, int]:
    return {"owner": status, "teammate": status, "staff": status, "outsider": status, "anonymous": anonymous}


def view(ok: int, anonymous: int = WEB_LOGIN) -> dict[str, int]:
    """Members and staff may; outsiders meet 404."""
    return {"owner": ok, "teammate": ok, "staff": ok, "outsider": 404, "anonymous": anonymous}


def manage(ok: int, anonymous: int = WEB_LOGIN) -> dict[str, int]:
    """Owners and staff may; a teammate (who knows the project) is refused 403; outsiders 404."""
    return {"owner": ok, "teammate": 403, "staff": ok, "outsider": 404, "anonymous": anonymous}


def annotate(ok: int, anonymous: int = WEB_LOGIN) -> dict[str, int]:
    """Members may; staff who are not members are refused 403 (labels count per membership); outsiders 404."""
    return {"owner": ok, "teammate": ok, "staff": 403, "outsider": 404, "anonymous": anonymous}


def api_view(ok: int) -> dict[str, int]:
    return view(ok, API_LOGIN)


def api_manage(ok: int) -> dict[str, int]:
    return manage(ok, API_LOGIN)


def api_annotate(ok: int) -> dict[str, int]:
    return annotate(ok, API_LOGIN)


@dataclass(frozen=True)
class Route:
    name: str  # URL name (admin: "admin:<name>")
    method: str
    expected: dict[str, int]  # on the persona's own project
    args: tuple[str, ...] = ()  # which objects fill the URL: "project", "label", "item", ...
    body: dict = field(default_factory=dict)
    api: bool = False

    @property
    def scoped(self) -> bool:
        """Whether the URL names a project's object (so "other" and "missing" mean something)."""
        return bool(self.args)

    def __str__(self) -> str:
        return f"{self.method} {self.name}"


P = ("project",)
ROUTES = [
    # --- workbench/urls.py ------------------------------------------------------------------------
    Route("login", "GET", everyone(200, 200)),
    Route("login", "POST", everyone(200, 200)),  # no credentials: the form again, with its error
    Route("login", "PUT", everyone(405, 405)),
    Route("logout", "POST", everyone(302, 302)),
    Route("logout", "GET", everyone(405, 405)),
    # --- annotate/urls.py -------------------------------------------------------------------------
    Route("project-list", "GET", everyone(200, WEB_LOGIN)),
    Route("project-list", "PUT", everyone(405, WEB_LOGIN)),
    Route("project-detail", "GET", view(200), P),
    Route("project-detail", "HEAD", view(200), P),
    Route("project-detail", "PUT", everyone(405, WEB_LOGIN), P),
    Route("project-detail", "DELETE", everyone(405, WEB_LOGIN), P),
    Route("project-settings", "GET", manage(200), P),
    Route("project-settings", "POST", manage(200), P),  # an empty form: shown again with its errors
    Route("project-settings", "PUT", everyone(405, WEB_LOGIN), P),
    Route("project-activity", "GET", view(200), P),
    Route("project-activity", "POST", everyone(405, WEB_LOGIN), P),
    Route("project-retrain", "POST", manage(302), P),
    Route("project-retrain", "GET", everyone(405, WEB_LOGIN), P),
    Route("project-warm-start", "POST", manage(302), P),  # an empty choice clears the warm start
    Route("project-warm-start", "GET", everyone(405, WEB_LOGIN), P),
    Route("project-adapt", "POST", manage(302), P),
    Route("project-adapt", "GET", everyone(405, WEB_LOGIN), P),
    Route("meta-model-list", "GET", everyone(200, WEB_LOGIN)),
    Route("meta-model-list", "POST", everyone(400, WEB_LOGIN)),  # an empty form names what is missing
    Route("meta-model-list", "DELETE", everyone(405, WEB_LOGIN)),
    Route("meta-model-status", "GET", view(200), ("meta_model",)),
    Route("meta-model-status", "POST", everyone(405, WEB_LOGIN), ("meta_model",)),
    # A teammate may see a meta-model of their project but not cancel it: as if it were not there.
    Route("meta-model-cancel", "POST", {**manage(302), "teammate": 404}, ("meta_model",)),
    Route("meta-model-cancel", "GET", everyone(405, WEB_LOGIN), ("meta_model",)),
    Route("annotate", "GET", annotate(200), P),
    Route("annotate", "PUT", everyone(405, WEB_LOGIN), P),
    Route("annotate-submit", "POST", annotate(302), P),  # no item named: back to the page with the reason
    Route("annotate-submit", "GET", everyone(405, WEB_LOGIN), P),
    Route("annotate-skip", "POST", annotate(302), P),
    Route("annotate-skip", "GET", everyone(405, WEB_LOGIN), P),
    Route("annotate-undo", "POST", annotate(302), P),
    Route("annotate-undo", "DELETE", everyone(405, WEB_LOGIN), P),
    Route("import-upload", "GET", manage(200), P),
    Route("import-upload", "POST", manage(200), P),  # no file: the form again with its error
    Route("import-upload", "PUT", everyone(405, WEB_LOGIN), P),
    Route("import-status", "GET", manage(200), ("project", "task")),
    Route("import-status", "POST", everyone(405, WEB_LOGIN), ("project", "task")),
    Route("dashboard-quality", "GET", manage(200), P),
    Route("dashboard-quality", "POST", everyone(405, WEB_LOGIN), P),
    Route("dashboard-quality-csv", "GET", manage(200), ("project", "quality_table")),
    Route("dashboard-budget", "GET", manage(200), P),
    Route("dashboard-budget", "POST", manage(400), P),  # no form named
    Route("dashboard-budget", "DELETE", everyone(405, WEB_LOGIN), P),
    Route("dashboard-budget-csv", "GET", manage(200), ("project", "budget_table")),
    # --- annotate/api/urls.py ---------------------------------------------------------------------
    Route("api-schema", "GET", everyone(200, 200), api=True),  # the schema is public, as the docs say
    Route("api-docs", "GET", everyone(200, 200), api=True),
    Route("api-projects", "GET", everyone(200, API_LOGIN), api=True),
    Route("api-projects", "POST", everyone(400, API_LOGIN), api=True),  # an empty body names the fields
    Route("api-projects", "DELETE", everyone(405, API_LOGIN), api=True),
    Route("api-project", "GET", api_view(200), P, api=True),
    Route("api-project", "PATCH", api_manage(200), P, api=True),
    Route("api-project", "PUT", {**everyone(405, API_LOGIN)}, P, api=True),
    Route("api-project", "DELETE", {**everyone(405, API_LOGIN)}, P, api=True),
    Route("api-labels", "GET", api_view(200), P, api=True),
    Route("api-labels", "POST", api_manage(400), P, api=True),
    Route("api-label", "GET", api_view(200), ("project", "label"), api=True),
    Route("api-label", "PATCH", api_manage(200), ("project", "label"), api=True),
    Route("api-label", "DELETE", api_manage(204), ("project", "spare_label"), api=True),
    Route("api-items", "GET", api_view(200), P, api=True),
    Route("api-items", "POST", api_manage(400), P, api=True),
    Route("api-item", "GET", api_view(200), ("project", "item"), api=True),
    Route("api-item", "DELETE", everyone(405, API_LOGIN), ("project", "item"), api=True),
    Route("api-export", "GET", api_view(200), P, api=True),
    Route("api-model-versions", "GET", api_view(200), P, api=True),
    Route("api-model-version", "GET", api_view(200), ("project", "version"), api=True),
    Route("api-budget", "GET", api_manage(200), P, api=True),
    Route("api-budget", "PATCH", api_manage(200), P, api=True),
    Route("api-budget", "PUT", api_manage(400), P, api=True),  # a replacement needs every field
    Route("api-members", "GET", api_manage(200), P, api=True),
    Route("api-member", "PATCH", api_manage(400), ("project", "member"), api=True),  # quota is required
    Route("api-retrain", "POST", api_manage(202), P, api=True),
    Route("api-retrain", "GET", everyone(405, API_LOGIN), P, api=True),
    Route("api-task", "GET", api_view(200), ("task",), api=True),
    Route("api-next", "POST", api_annotate(200), P, api=True),
    Route("api-next", "GET", everyone(405, API_LOGIN), P, api=True),
    Route("api-annotate", "GET", api_view(200), P, api=True),
    Route("api-annotate", "POST", api_annotate(400), P, api=True),  # no item named
    Route("api-skip", "POST", api_annotate(400), P, api=True),
    Route("api-undo", "POST", api_annotate(400), P, api=True),  # nothing to undo
    Route("api-status", "GET", api_view(200), P, api=True),
    # --- the admin (staff here have no model permissions: Django's own rule says 403) ---------------
    Route("admin:index", "GET", {**everyone(302, 302), "staff": 200}),
    Route("admin:annotate_project_changelist", "GET", {**everyone(302, 302), "staff": 403}),
    Route("admin:annotate_project_change", "GET", {**everyone(302, 302), "staff": 403}, P),
]

# Admin pages not in the table are Django's own per-model pages with the same rule as the two above.
ADMIN_COVERED_BY_RULE = "admin:"


@dataclass
class World:
    users: dict
    own: dict
    other: dict
    missing: dict


def _objects(project, owner) -> dict:
    """One of each object a URL can name, in `project`."""
    items = add_items(project, ["purr", "bark"], priorities=[0.9, 0.1])
    spare = Label.objects.create(project=project, name="spare", position=9)
    ModelVersion.objects.create(project=project, number=1, request_id="r1", estimator="logistic_regression",
                                query_strategy="margin", trained_on=0, label_count=0, artifact=b"")
    task_id = str(uuid.uuid4())
    ImportJob.objects.create(project=project, source_name="a.csv", file_format="csv", task_id=task_id,
                             status="succeeded")
    meta_model = MetaModel.objects.create(name=f"from {project.name}", modality="text", featuriser="text_minilm",
                                          algorithm="protonet", status=MetaModelStatus.RUNNING)
    meta_model.source_projects.set([project])
    return {"project": project.pk, "label": project.labels.first().pk, "spare_label": spare.pk,
            "item": items[0].pk, "version": 1, "task": task_id, "meta_model": meta_model.pk,
            "member": owner.pk, "quality_table": "model-versions", "budget_table": "annotators"}


@pytest.fixture
def world(db) -> World:
    owner, teammate, staff, outsider = (make_user(n) for n in ("owner", "teammate", "staff", "outsider"))
    staff.is_staff = True
    staff.save(update_fields=["is_staff"])
    own = make_project(owner, labels=("cat", "dog"), retrain_every=1000)
    add_annotator(own, teammate)
    stranger = make_user("stranger")
    other = make_project(stranger, labels=("cat", "dog"), retrain_every=1000)
    own_objects, other_objects = _objects(own, owner), _objects(other, stranger)
    missing = {k: (v + 10_000 if isinstance(v, int) else v) for k, v in other_objects.items()}
    missing["task"] = str(uuid.uuid4())
    return World(users={"owner": owner, "teammate": teammate, "staff": staff, "outsider": outsider,
                        "anonymous": None}, own=own_objects, other=other_objects, missing=missing)


@pytest.fixture(autouse=True)
def no_tasks_left_behind():
    """POSTs here queue real retrains and adaptations; drop them so no later worker runs them."""
    yield
    redis_client().delete("celery", "long")


def _call(route: Route, user, objects: dict):
    url = reverse(route.name, args=[objects[a] for a in route.args])
    if route.api:
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client.generic(route.method, url, data=_json(route.body), content_type="application/json")
    client = Client()
    if user is not None:
        client.force_login(user)
    if route.method in ("GET", "HEAD"):
        return client.generic(route.method, url)
    return client.generic(route.method, url, data="", content_type="application/x-www-form-urlencoded")


def _json(body: dict) -> str:
    import json

    return json.dumps(body)


def _expected_on_other(route: Route, persona: str) -> int:
    if persona in ("staff", "anonymous"):
        return route.expected[persona]
    return route.expected["outsider"]


CASES = [pytest.param(r, p, id=f"{r}-{p}") for r in ROUTES for p in PERSONAS]


@pytest.mark.parametrize(("route", "persona"), CASES)
def test_each_persona_gets_the_tabled_status_on_its_own_project(world, route, persona):
    response = _call(route, world.users[persona], world.own)
    assert response.status_code == route.expected[persona], (
        f"{route} as {persona}: {response.status_code} {response.content[:300]!r}")


SCOPED = [pytest.param(r, p, id=f"{r}-{p}") for r in ROUTES if r.scoped for p in PERSONAS]


@pytest.mark.parametrize(("route", "persona"), SCOPED)
def test_another_projects_objects_answer_as_to_an_outsider(world, route, persona):
    response = _call(route, world.users[persona], world.other)
    assert response.status_code == _expected_on_other(route, persona), (
        f"{route} as {persona} on another project: {response.status_code} {response.content[:300]!r}")


OUTSIDER_404 = [pytest.param(r, id=str(r)) for r in ROUTES if r.scoped and r.expected["outsider"] == 404]


@pytest.mark.parametrize("route", OUTSIDER_404)
def test_an_outsider_cannot_tell_a_project_from_a_missing_one(world, route):
    existing = _call(route, world.users["outsider"], world.other)
    missing = _call(route, world.users["outsider"], world.missing)
    assert existing.status_code == missing.status_code == 404
    assert existing.content == missing.content
    assert existing.get("Content-Type") == missing.get("Content-Type")


def _route_names(resolver: URLResolver, namespace: str = "") -> set[str]:
    names = set()
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            names |= _route_names(pattern, inner)
        elif isinstance(pattern, URLPattern) and pattern.name:
            names.add(f"{namespace}{pattern.name}")
    return names


def test_every_route_is_in_the_table():
    tabled = {r.name for r in ROUTES}
    ours = {n for n in _route_names(get_resolver()) if not n.startswith(ADMIN_COVERED_BY_RULE)}
    assert ours - tabled == set(), "add these routes to ROUTES with their expected statuses"
    assert admin_site.is_registered(ImportJob), "the admin pages in the table exist"


@pytest.mark.parametrize("url", ["/projects/{big}/", "/api/v1/projects/{big}/", "/api/v1/projects/{pk}/members/{big}/",
                                 "/api/v1/projects/{pk}/items/{big}/", "/api/v1/projects/{pk}/labels/{big}/"])
def test_ids_too_big_for_the_database_are_404_not_500(world, url):
    client = APIClient()
    client.force_authenticate(world.users["owner"])
    response = client.get(url.format(big=10**30, pk=world.own["project"]))
    assert response.status_code == 404


def test_the_quota_form_refuses_a_user_id_too_big_for_the_database(world):
    client = Client()
    client.force_login(world.users["owner"])
    response = client.post(reverse("dashboard-budget", args=[world.own["project"]]),
                           {"form": "quota", "user": str(10**30), "quota": "5"})
    assert response.status_code == 200 and "Ensure this value is less than or equal to" in response.content.decode()
