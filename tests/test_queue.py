"""queue_next_item: order, leases, overlap, skips, expiry, budgets, permissions, undo."""
from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.errors import LeaseError, NotAMember, NothingToUndo, QueueClosed
from annotate.models import Annotation, Assignment, AssignmentStatus, Budget, Item, Membership, Project
from annotate.services.annotations import annotation_create, annotation_undo_last, assignment_skip
from annotate.services.queue import queue_next_item
from tests.factories import add_annotator, add_items, make_project, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return make_project(retrain_every=1000)


def test_queue_serves_highest_priority_first(project):
    items = add_items(project, ["a", "b", "c"], priorities=[0.2, 0.9, 0.5])
    annotator = add_annotator(project)

    served = queue_next_item(project=project, annotator=annotator)

    assert served.item_id == items[1].pk
    assert served.status == AssignmentStatus.ACTIVE
    assert Item.objects.get(pk=items[1].pk).lease_count == 1


def test_queue_returns_the_held_lease_on_reload(project):
    add_items(project, ["a", "b"], priorities=[0.9, 0.1])
    annotator = add_annotator(project)

    first = queue_next_item(project=project, annotator=annotator)
    again = queue_next_item(project=project, annotator=annotator)

    assert again.pk == first.pk
    assert Assignment.objects.filter(annotator=annotator).count() == 1


def test_two_annotators_get_different_items_without_overlap(project):
    add_items(project, ["a", "b"], priorities=[0.9, 0.1])
    alice, bob = add_annotator(project), add_annotator(project)

    assert queue_next_item(project=project, annotator=alice).item_id != \
        queue_next_item(project=project, annotator=bob).item_id


def test_overlap_serves_each_item_to_k_distinct_annotators():
    project = make_project(overlap=2, retrain_every=1000)
    items = add_items(project, ["a", "b"], priorities=[0.9, 0.1])
    alice, bob, carol = (add_annotator(project) for _ in range(3))

    a = queue_next_item(project=project, annotator=alice)
    b = queue_next_item(project=project, annotator=bob)
    c = queue_next_item(project=project, annotator=carol)

    assert a.item_id == b.item_id == items[0].pk
    assert c.item_id == items[1].pk
    annotation_create(project=project, annotator=alice, item_id=a.item_id, label="cat")
    annotation_create(project=project, annotator=bob, item_id=b.item_id, label="dog")
    assert Item.objects.get(pk=items[0].pk).done is True


def test_annotated_item_is_not_served_again_to_anyone(project):
    items = add_items(project, ["a", "b"], priorities=[0.9, 0.1])
    alice, bob = add_annotator(project), add_annotator(project)
    served = queue_next_item(project=project, annotator=alice)
    annotation_create(project=project, annotator=alice, item_id=served.item_id, label="cat")

    assert queue_next_item(project=project, annotator=alice).item_id == items[1].pk
    with pytest.raises(QueueClosed) as closed:
        queue_next_item(project=project, annotator=bob)
    assert closed.value.code == "queue_empty"


def test_skipped_item_goes_to_others_but_not_back_to_skipper(project):
    items = add_items(project, ["a", "b"], priorities=[0.9, 0.1])
    alice, bob = add_annotator(project), add_annotator(project)
    served = queue_next_item(project=project, annotator=alice)

    assignment_skip(project=project, annotator=alice, item_id=served.item_id)

    assert queue_next_item(project=project, annotator=alice).item_id == items[1].pk
    assert queue_next_item(project=project, annotator=bob).item_id == items[0].pk


def test_expired_lease_is_served_again(project):
    items = add_items(project, ["a"], priorities=[0.9])
    alice, bob = add_annotator(project), add_annotator(project)
    served = queue_next_item(project=project, annotator=alice)
    with pytest.raises(QueueClosed):
        queue_next_item(project=project, annotator=bob)

    past = timezone.now() - timedelta(seconds=1)
    Assignment.objects.filter(pk=served.pk).update(expires_at=past)
    Item.objects.filter(pk=items[0].pk).update(lease_expires_at=past)

    assert queue_next_item(project=project, annotator=bob).item_id == items[0].pk
    assert Assignment.objects.get(pk=served.pk).status == AssignmentStatus.EXPIRED
    with pytest.raises(LeaseError):
        annotation_create(project=project, annotator=alice, item_id=items[0].pk, label="cat")


def test_expired_lease_is_still_honoured_when_nobody_else_took_the_item(project):
    items = add_items(project, ["a"], priorities=[0.9])
    alice = add_annotator(project)
    served = queue_next_item(project=project, annotator=alice)
    Assignment.objects.filter(pk=served.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    annotation_create(project=project, annotator=alice, item_id=items[0].pk, label="cat")

    assert Item.objects.get(pk=items[0].pk).done


def test_project_budget_closes_the_queue(project):
    add_items(project, ["a", "b", "c"])
    Budget.objects.filter(project=project).update(max_labels=1)
    alice, bob = add_annotator(project), add_annotator(project)
    served = queue_next_item(project=project, annotator=alice)

    with pytest.raises(QueueClosed) as reserved:
        queue_next_item(project=project, annotator=bob)
    assert reserved.value.code == "budget_spent"
    annotation_create(project=project, annotator=alice, item_id=served.item_id, label="cat")
    with pytest.raises(QueueClosed) as spent:
        queue_next_item(project=project, annotator=alice)
    assert spent.value.code == "budget_spent"
    assert "budget of 1 labels is spent" in str(spent.value)


def test_cost_budget_closes_the_queue(project):
    add_items(project, ["a", "b", "c"])
    Budget.objects.filter(project=project).update(cost_per_label="0.50", max_cost="1.00")
    alice = add_annotator(project)
    for _ in range(2):
        served = queue_next_item(project=project, annotator=alice)
        annotation_create(project=project, annotator=alice, item_id=served.item_id, label="cat")

    with pytest.raises(QueueClosed) as closed:
        queue_next_item(project=project, annotator=alice)
    assert closed.value.code == "budget_spent"
    project.refresh_from_db()
    assert str(project.cost_spent) == "1.00"


def test_free_labels_pass_a_cost_limit_below_the_spend_at_serve_and_at_save(project):
    """Serving and saving agree: with a price of 0 a label spends nothing, so a cost limit
    already below the spend (lowered after paid labels) refuses neither."""
    add_items(project, ["a", "b"])
    Project.objects.filter(pk=project.pk).update(cost_spent="5.00")
    Budget.objects.filter(project=project).update(cost_per_label="0", max_cost="1.00")
    alice = add_annotator(project)

    served = queue_next_item(project=project, annotator=alice)
    annotation_create(project=project, annotator=alice, item_id=served.item_id, label="cat")

    assert Item.objects.get(pk=served.item_id).done


def test_annotator_quota_closes_only_that_annotators_queue(project):
    add_items(project, ["a", "b", "c"])
    alice = add_annotator(project, quota=1)
    bob = add_annotator(project)
    served = queue_next_item(project=project, annotator=alice)
    annotation_create(project=project, annotator=alice, item_id=served.item_id, label="cat")

    with pytest.raises(QueueClosed) as closed:
        queue_next_item(project=project, annotator=alice)
    assert closed.value.code == "quota_spent"
    assert queue_next_item(project=project, annotator=bob) is not None


def test_outsider_is_refused(project):
    add_items(project, ["a"])
    with pytest.raises(NotAMember):
        queue_next_item(project=project, annotator=make_user())


def test_annotating_an_item_not_served_is_refused(project):
    items = add_items(project, ["a", "b"], priorities=[0.9, 0.1])
    alice = add_annotator(project)
    with pytest.raises(LeaseError):
        annotation_create(project=project, annotator=alice, item_id=items[1].pk, label="cat")
    assert Annotation.objects.count() == 0


def test_undo_restores_counters_and_serves_the_item_again(project):
    items = add_items(project, ["a", "b"], priorities=[0.9, 0.1])
    alice = add_annotator(project)
    served = queue_next_item(project=project, annotator=alice)
    annotation_create(project=project, annotator=alice, item_id=served.item_id, label="cat")

    annotation_undo_last(project=project, annotator=alice)

    project.refresh_from_db()
    assert project.label_count == 0
    assert Membership.objects.get(project=project, user=alice).label_count == 0
    assert Annotation.objects.count() == 0
    item = Item.objects.get(pk=items[0].pk)
    assert (item.done, item.annotation_count, item.lease_count) == (False, 0, 1)
    assert queue_next_item(project=project, annotator=alice).item_id == items[0].pk
    with pytest.raises(NothingToUndo):
        annotation_undo_last(project=project, annotator=alice)


def test_label_refused_by_a_spent_budget_gives_the_item_back(project):
    items = add_items(project, ["a", "b"], priorities=[0.9, 0.1])
    alice = add_annotator(project)
    queue_next_item(project=project, annotator=alice)
    Budget.objects.filter(project=project).update(max_labels=0)  # the owner cut the budget meanwhile

    with pytest.raises(QueueClosed) as refused:
        annotation_create(project=project, annotator=alice, item_id=items[0].pk, label="cat")

    assert refused.value.code == "budget_spent"
    assert Annotation.objects.count() == 0
    assert Assignment.objects.get(item=items[0]).status == AssignmentStatus.EXPIRED
    assert Item.objects.get(pk=items[0].pk).lease_count == 0


def test_raising_overlap_reopens_done_items_but_not_seed_labelled_ones(project):
    import io

    from annotate.services.importing import import_items
    from annotate.services.projects import project_overlap_apply

    import_items(project=project, stream=io.BytesIO(b"id,text,label\nseed,x,cat\n"), file_format="csv", source_name="s")
    add_items(project, ["a"])
    item = Item.objects.get(project=project, external_id="t0")
    alice, bob = add_annotator(project), add_annotator(project)
    served = queue_next_item(project=project, annotator=alice)
    annotation_create(project=project, annotator=alice, item_id=served.item_id, label="cat")
    assert Item.objects.get(pk=item.pk).done

    project.overlap = 2
    project.save()
    assert project_overlap_apply(project=project) == 1

    assert not Item.objects.get(pk=item.pk).done
    assert Item.objects.get(external_id="seed").done
    assert queue_next_item(project=project, annotator=bob).item_id == item.pk
