"""Set up one federated site's own deployment: its database migrated and a digits project in it.

Run as ``python -m tests.federated_site SLUG OFFSET`` with DATABASE_URL naming the
site's own database (as the site's worker will). Prints the project id, the
external ids, texts of the payloads and label names, so the test can look for
them in what crossed the boundary.
"""
from __future__ import annotations

import json
import sys

import django


def main(slug: str, offset: int) -> None:
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from tests.test_federated_sites import CLASSES, site_rows_for
    from tests.test_meta_tasks import pixel_project

    rows = site_rows_for(slug, offset)
    project = pixel_project(CLASSES, rows)
    print(json.dumps({"project_id": project.pk, "external_ids": [r[0] for r in rows]}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
