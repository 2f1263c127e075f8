"""Schema-driven fuzzing of the REST API: no generated request may make the server fail.

Schemathesis reads /api/v1/schema/ from the running app (pytest-django's
live server on the test database) and sends every operation requests built
from the schema: valid ones (positive) and ones that break it (negative),
as the owner of a seeded project, over real HTTP. Any 5xx fails the test
(`not_a_server_error`), with a curl command that reproduces it; so does an
answer whose status, content type or body the schema does not document,
which keeps the schema honest. The run is bounded (40 requests an operation)
and derandomized, so CI sees the same requests every time.

Path parameters are drawn from ids that exist (the seeded project, its
labels, items, members and model version) plus some that do not, so the
requests reach the code behind the 404s. The test also asserts that each
operation was called and answered 2xx at least once: a fuzz run that only
ever met a 404 would test nothing.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from annotate.models import ImportJob, Item
from annotate.services.annotations import annotation_create
from annotate.services.queue import queue_next_item
from learners.models import ModelVersion
from tests.factories import add_annotator, add_items, make_project, make_user

EXAMPLES = {schemathesis.GenerationMode.POSITIVE: 25, schemathesis.GenerationMode.NEGATIVE: 15}
MISSING = 987_654_321  # an id no seeded row has

# Operations whose 2xx needs a state random requests rarely build; each is still called (and must not 5xx),
# and tests/test_rest_api.py covers its success.
NO_2XX_NEEDED = {
    # Needs an item currently leased to the caller and a label name from the set, in one request.
    "POST /api/v1/projects/{id}/annotations/",
    # Needs an item currently leased to the caller.
    "POST /api/v1/projects/{id}/skip/",
}


@pytest.fixture
def seeded(live_server):
    """An owner with a token, their project (labels, items, an annotation, a teammate, a model version)."""
    owner = make_user("fuzz-owner")
    project = make_project(owner, labels=("cat", "dog", "bird"), retrain_every=10_000)
    add_items(project, [f"text {i}" for i in range(12)])
    teammate = add_annotator(project, make_user("fuzz-teammate"))
    item = queue_next_item(project=project, annotator=owner).item
    annotation_create(project=project, annotator=owner, item_id=item.pk, label="cat")
    ModelVersion.objects.create(project=project, number=1, request_id="seed", estimator="logistic_regression",
                                query_strategy="margin", featuriser="text_tfidf", trained_on=1, label_count=1,
                                metrics={"accuracy": 0.5})
    elsewhere = make_project(make_user("fuzz-stranger"))
    task_id = "5f0c7c8e-3f4e-4c1a-9d55-0c2b8e0e9b1f"  # an import of the project, so its task is the owner's to read
    ImportJob.objects.create(project=project, source_name="a.csv", file_format="csv", task_id=task_id,
                             status="succeeded")
    # Existing ids three times out of four: a 404 is cheap to reach, the code behind a 200 is what needs fuzzing.
    known = {
        "id": [project.pk, project.pk, project.pk, elsewhere.pk],
        "label_id": [*project.labels.values_list("pk", flat=True), MISSING],
        "item_id": [*Item.objects.filter(project=project).values_list("pk", flat=True)[:4], MISSING],
        "user_id": [owner.pk, teammate.pk, MISSING],
        "number": [1, 2],
        "task_id": [task_id, task_id, "00000000-0000-4000-8000-000000000000"],
    }
    return {"token": Token.objects.create(user=owner).key, "known": known}


@pytest.fixture
def broker_queue_emptied(redis_server):
    """Drop the retrain and import tasks the fuzzing queued, so a later test's worker does not run them."""
    yield
    redis_server.delete("celery", "long")


@pytest.mark.django_db(transaction=True)
def test_no_generated_request_makes_the_server_fail(live_server, seeded, broker_queue_emptied):
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/v1/schema/?format=json")
    auth = {"Authorization": f"Token {seeded['token']}"}
    calls: dict[str, Counter] = defaultdict(Counter)
    failures: dict[str, str] = {}
    started = time.monotonic()

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, [op.label for op in operations]
    for operation in operations:
        for mode, examples in EXAMPLES.items():
            try:
                fuzz(operation, mode, examples, seeded["known"], live_server.url, auth, calls[operation.label])
            except (Exception, BaseExceptionGroup) as exc:  # collected, so one run reports every failing operation
                failures[f"{operation.label} ({mode.value})"] = f"{type(exc).__name__}: {exc}"[:3000]
    elapsed = time.monotonic() - started

    assert not failures, "\n\n".join(f"{label}\n{error}" for label, error in failures.items())
    uncalled = [op.label for op in operations if sum(calls[op.label].values()) < sum(EXAMPLES.values()) // 2]
    assert not uncalled, f"operations the fuzzer hardly called: {uncalled}"
    never_ok = [op.label for op in operations
                if op.label not in NO_2XX_NEEDED and not any(200 <= code < 300 for code in calls[op.label])]
    assert not never_ok, f"operations that never answered 2xx: {never_ok}\n{dict(calls)}"
    print(f"fuzzed {len(operations)} operations with {sum(sum(c.values()) for c in calls.values())} requests "
          f"in {elapsed:.1f} s")


def fuzz(operation, mode, examples: int, known: dict, base_url: str, auth: dict, seen: Counter) -> None:
    """Send `examples` generated requests for one operation; raise on the first failed check (shrunk)."""
    names = [parameter.name for parameter in operation.path_parameters]
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    if mode == schemathesis.GenerationMode.NEGATIVE and not (operation.query or operation.body):
        # The path is all there is to break: let schemathesis generate bad ids too. A path that no
        # longer matches a route is answered by Django's HTML 404, outside the API's schema.
        names = []
        checks = [not_a_server_error, status_code_conformance]
    path_ids = st.fixed_dictionaries({name: st.sampled_from(known[name]) for name in names if name in known})
    cases = path_ids.flatmap(lambda ids: operation.as_strategy(generation_mode=mode, path_parameters=ids))

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
              phases=[Phase.generate, Phase.shrink],
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(case=cases)
    def send(case):
        response = case.call(base_url=base_url, headers=auth, timeout=30)
        seen[response.status_code] += 1
        case.validate_response(response, checks=checks, headers=auth)

    send()
