"""Test data builders. Personas: an owner, an annotator, an outsider who must see nothing."""
from __future__ import annotations

import io
import itertools
import json

from django.contrib.auth import get_user_model

from annotate.models import Item, Project, Role
from annotate.services.importing import import_items
from annotate.services.projects import membership_add, project_create

_counter = itertools.count(1)


def make_user(name: str | None = None, password: str = "pw-for-tests"):
    name = name or f"user{next(_counter)}"
    return get_user_model().objects.create_user(username=name, password=password)


def make_project(owner=None, *, labels=("cat", "dog"), modality="text", **options) -> Project:
    owner = owner or make_user()
    return project_create(name=f"project {next(_counter)}", modality=modality, labels=list(labels),
                          owner=owner, **options)


def add_annotator(project: Project, user=None, quota: int | None = None):
    user = user or make_user()
    membership_add(project=project, user=user, role=Role.ANNOTATOR, quota=quota)
    return user


def add_items(project: Project, texts: list[str], priorities: list[float] | None = None) -> list[Item]:
    """Items through the real importer; optional explicit priorities to pin the queue order."""
    body = "".join(json.dumps({"id": f"t{i}", "text": text}) + "\n" for i, text in enumerate(texts))
    import_items(project=project, stream=io.BytesIO(body.encode()), file_format="jsonl", source_name="t.jsonl")
    items = list(Item.objects.filter(project=project).order_by("id"))
    if priorities is not None:
        for item, priority in zip(items, priorities):
            item.priority = priority
        Item.objects.bulk_update(items, ["priority"])
    return items
