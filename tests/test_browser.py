"""End-to-end tests in a real browser: headless Debian Chromium driven by Playwright.

The app runs under pytest-django's `live_server` (a real HTTP server thread on
the test database), so every test commits its data (`transaction=True`) and
checks the outcome in the database as well as on the page. Keys are pressed
with the real keyboard, so annotate.js and the plain forms behind it are what
is tested.

Chromium comes from Debian (`make chromium`, which needs root); without
/usr/bin/chromium these tests are skipped, saying why. Screenshots land in
`test-artifacts/` at the repository root (git-ignored).
"""
from __future__ import annotations

import io

import pytest

from annotate.models import Annotation, AnnotationSource, Assignment, AssignmentStatus, Membership
from annotate.services.importing import import_items
from tests.browser import ARTIFACTS, log_in
from tests.factories import add_annotator, add_items, make_project, make_user


def open_annotate(page, live_server, project) -> int:
    """Go to the annotate screen; the id of the item it shows."""
    response = page.goto(f"{live_server.url}/projects/{project.pk}/annotate/")
    assert response is not None and response.status == 200
    return shown_item_id(page)


def shown_item_id(page) -> int:
    return int(page.locator("#item").get_attribute("data-item-id"))


def press_and_wait(page, key: str, before: int) -> int:
    """Press `key` on the annotate screen; wait for the next page to show another item
    and to finish loading (so annotate.js listens again); the new item's id."""
    from playwright.sync_api import expect

    page.keyboard.press(key)
    # A positive wait: it matches only in the next document, never in the gap between two.
    expect(page.locator(f'#item:not([data-item-id="{before}"])')).to_be_visible()
    page.wait_for_load_state("load")
    return shown_item_id(page)


pytestmark = pytest.mark.django_db(transaction=True)


# --- tests ------------------------------------------------------------------

def test_annotator_labels_ten_items_with_number_keys_and_undoes_one(live_server, new_page):
    from playwright.sync_api import expect

    labels = ("business", "sport", "tech")
    project = make_project(labels=labels, retrain_every=1000)
    annotator = add_annotator(project)
    # Distinct priorities in an order unlike the id order: 7 is coprime with 15.
    priorities = [((i * 7) % 15) / 10 for i in range(15)]
    items = add_items(project, [f"news story number {i}" for i in range(15)], priorities=priorities)
    by_priority = [item.pk for item in sorted(items, key=lambda item: -item.priority)]

    page = new_page()
    log_in(page, live_server, annotator)
    current = open_annotate(page, live_server, project)
    # The page lists the labels in position order, keyed 1..3.
    for key, name in enumerate(labels, start=1):
        expect(page.locator(f'#label-form button[data-key="{key}"]')).to_contain_text(name)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "annotate-page.png"), full_page=True)

    keys = ["1", "2", "3", "1", "3", "2", "2", "1", "3", "1"]
    served, given = [current], {}
    for key in keys:
        given[current] = labels[int(key) - 1]
        current = press_and_wait(page, key, current)
        served.append(current)

    # Ten labels given, the eleventh item shown, best priority first throughout.
    assert served == by_priority[:11]
    expect(page.locator("#progress")).to_contain_text("Project: 10 labels")

    undone = served[9]
    current = press_and_wait(page, "U", current)
    assert current == undone
    expect(page.locator(".messages")).to_contain_text("Your last label was taken back")
    expect(page.locator("#progress")).to_contain_text("Project: 9 labels")
    page.screenshot(path=str(ARTIFACTS / "annotate-after-undo.png"), full_page=True)

    human = Annotation.objects.filter(project=project, annotator=annotator, source=AnnotationSource.HUMAN)
    assert human.count() == 9
    assert {a.item_id: a.label.name for a in human.select_related("label")} == {
        item_id: label for item_id, label in given.items() if item_id != undone
    }
    assert not Annotation.objects.filter(item_id=undone).exists()
    assert Assignment.objects.get(item_id=undone, annotator=annotator).status == AssignmentStatus.ACTIVE
    assert shown_item_id(page) == undone
    project.refresh_from_db()
    assert project.label_count == 9
    assert Membership.objects.get(project=project, user=annotator).label_count == 9


def test_item_content_is_escaped(live_server, new_page):
    from playwright.sync_api import expect

    hostile = "<script>window.__pwned = 1</script><b>bold</b>"
    project = make_project(retrain_every=1000)
    annotator = add_annotator(project)
    add_items(project, [hostile])

    page = new_page()
    log_in(page, live_server, annotator)
    open_annotate(page, live_server, project)

    text = page.locator("#item-text")
    expect(text).to_have_text(hostile)
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert text.locator("b").count() == 0
    assert text.locator("script").count() == 0


def test_outsider_sees_no_project(live_server, new_page):
    from playwright.sync_api import expect

    owner = make_user()
    project = make_project(owner, retrain_every=1000)
    add_items(project, ["a", "b"])
    outsider = make_user()
    urls = [f"{live_server.url}/projects/{project.pk}/", f"{live_server.url}/projects/{project.pk}/annotate/"]

    # The owner, a member, gets both pages: the 404s below are about membership.
    page = new_page()
    log_in(page, live_server, owner)
    for url in urls:
        assert page.goto(url).status == 200

    page = new_page()
    log_in(page, live_server, outsider)
    expect(page.locator("main")).not_to_contain_text(project.name)
    for url in urls:
        response = page.goto(url)
        assert response.status == 404, url
        expect(page.locator("body")).not_to_contain_text(project.name)
    assert not Assignment.objects.filter(annotator=outsider).exists()


def test_s_key_skips_and_the_item_is_not_served_again(live_server, new_page):
    from playwright.sync_api import expect

    project = make_project(retrain_every=1000)
    annotator = add_annotator(project)
    items = add_items(project, ["first", "second", "third"], priorities=[0.9, 0.5, 0.1])

    page = new_page()
    log_in(page, live_server, annotator)
    skipped = open_annotate(page, live_server, project)
    assert skipped == items[0].pk

    current = press_and_wait(page, "S", skipped)
    assert current == items[1].pk
    assignment = Assignment.objects.get(item_id=skipped, annotator=annotator)
    assert assignment.status == AssignmentStatus.SKIPPED
    assert assignment.finished_at is not None

    # A reload serves the held lease, not the skipped item.
    page.reload()
    assert shown_item_id(page) == current

    # Label the rest: the queue closes without ever coming back to the skipped item.
    current = press_and_wait(page, "1", current)
    assert current == items[2].pk
    page.keyboard.press("1")
    closed = page.locator("#queue-closed")
    expect(closed).to_have_attribute("data-code", "queue_empty")
    expect(page.locator("#item")).to_have_count(0)
    page.wait_for_load_state("load")
    page.screenshot(path=str(ARTIFACTS / "annotate-queue-closed.png"), full_page=True)

    assert Assignment.objects.get(item_id=skipped, annotator=annotator).status == AssignmentStatus.SKIPPED
    assert not Annotation.objects.filter(item_id=skipped).exists()
    assert set(Annotation.objects.filter(annotator=annotator).values_list("item_id", flat=True)) == {
        items[1].pk, items[2].pk,
    }


def test_owner_picks_a_strategy_and_an_annotator_sees_an_image_item(live_server, new_page):
    from playwright.sync_api import expect

    owner = make_user()
    project = make_project(owner, labels=("0", "1"), modality="image", retrain_every=1000)
    body = "id,pixels\nbright,0 16 16 0\ndark,0 0 0 4\n"
    import_items(project=project, stream=io.BytesIO(body.encode()), file_format="csv", source_name="img.csv")

    page = new_page()
    log_in(page, live_server, owner)
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    page.get_by_role("link", name="Settings").click()
    page.get_by_label("Query strategy").select_option("kcenter")
    page.get_by_label("Estimator").select_option("mlp")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".messages")).to_contain_text("Saved (estimator, query_strategy)")
    project.refresh_from_db()
    assert (project.query_strategy, project.estimator) == ("kcenter", "mlp")
    # BALD without the MLP is refused, with the reason, and nothing changes.
    page.get_by_label("Estimator").select_option("logistic_regression")
    page.get_by_label("Query strategy").select_option("bald")
    page.get_by_role("button", name="Save").click()
    expect(page.locator(".errors")).to_contain_text("needs dropout sampling")
    page.goto(f"{live_server.url}/projects/{project.pk}/")
    expect(page.locator("#query-strategy")).to_have_text("kcenter")

    open_annotate(page, live_server, project)
    image = page.locator("#item-image")
    expect(image).to_be_visible()
    assert image.locator("rect").count() == 4
    page.screenshot(path=str(ARTIFACTS / "annotate-image.png"), full_page=True)
