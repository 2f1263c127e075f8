"""One federated site's own deployment, driven from the tests as its operator would drive it.

Run with DATABASE_URL naming the site's own database (as the site's worker will):

    python -m tests.federated_site setup SLUG OFFSET
        migrate, make the site's manager and a digits project; prints the project id, the manager's
        username and the external ids (so the test can look for them in what crossed the boundary)
    python -m tests.federated_site rows SLUG FEDERATION
        the training rows the site reads for its offer to FEDERATION (base64 .npz)
    python -m tests.federated_site offer SLUG JSON
        make the offers in JSON (a list of keyword arguments of `offer_create`, the service behind
        `manage.py federation_offer`) as the site's manager; prints their ids
"""
from __future__ import annotations

import json
import sys

import django


def setup(slug: str, offset: int) -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from tests.factories import make_user
    from tests.test_federated_sites import CLASSES, site_rows_for
    from tests.test_meta_tasks import pixel_project

    rows = site_rows_for(slug, offset)
    manager = make_user(f"site-manager-{slug}")
    project = pixel_project(CLASSES, rows, owner=manager)
    print(json.dumps({"project_id": project.pk, "external_ids": [r[0] for r in rows], "manager": manager.username}))


def offer(slug: str, specs: str) -> None:
    from django.contrib.auth.models import User

    from learners.services.federated_site import offer_create

    manager = User.objects.get(username=f"site-manager-{slug}")
    ids = [offer_create(user=manager, **spec).pk for spec in json.loads(specs)]
    print(json.dumps(ids))


def rows(slug: str) -> None:
    """The training rows the site's offer (the only one) trains on, as the site reads them: base64 .npz."""
    import base64
    import io

    import numpy as np

    from learners.models import SiteOffer
    from learners.services.federated_site import _site_for

    X, y = _site_for(SiteOffer.objects.get(federation=sys.argv[3]))._rows()
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    print(base64.b64encode(buffer.getvalue()).decode("ascii"))


if __name__ == "__main__":
    django.setup()
    command, args = sys.argv[1], sys.argv[2:]
    if command == "setup":
        setup(args[0], int(args[1]))
    elif command == "rows":
        rows(args[0])
    elif command == "offer":
        offer(args[0], args[1])
    else:
        raise SystemExit(f"unknown command {command!r}")
