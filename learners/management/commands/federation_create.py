"""manage.py federation_create SPEC.json: a federation and its sites from a JSON file, checked as a whole."""
import json
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from learners.services.federated import FederationInvalid, federation_create


class Command(BaseCommand):
    help = ('Create a federation from a JSON spec: {"name", "owner" (username), "featuriser", "n_features", '
            '"classes", "sites": [{"slug", "project_id"? (in-process only), "region"?}], and optional settings '
            '(backend, estimator, strategy, strategy_parameters, training, mode, buffer_size, sites_per_round, '
            'timeout_seconds, min_updates, allow_single_site, secure_aggregation, privacy, compression, flower_address, '
            'flower_root_certificates)}. Nothing is written on an error. Prints the public key sites put in their '
            'offers.')

    def add_arguments(self, parser):
        parser.add_argument("spec", help="path to the JSON spec")

    def handle(self, *args, **options):
        try:
            spec = json.loads(Path(options["spec"]).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandError(f"{options['spec']}: {exc}") from None
        if not isinstance(spec, dict):
            raise CommandError(f"{options['spec']}: expected a JSON object")
        owner = get_user_model().objects.filter(username=spec.pop("owner", "")).first()
        if owner is None:
            raise CommandError("owner: give the username of an existing user")
        try:
            federation = federation_create(owner=owner, **spec)
        except FederationInvalid as exc:
            raise CommandError(str(exc)) from None
        except TypeError as exc:
            raise CommandError(f"{options['spec']}: {exc}") from None
        self.stdout.write(json.dumps({"federation_id": federation.pk, "name": federation.name,
                                      "sites": list(federation.sites.values_list("slug", flat=True)),
                                      "public_key": federation.public_key}))
