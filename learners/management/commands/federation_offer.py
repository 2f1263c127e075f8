"""manage.py federation_offer: at a site, offer a project to a federation (or list, switch off, show the ledger)."""
import json

from django.core.management.base import BaseCommand, CommandError

from annotate.access import user_for_command
from annotate.errors import WorkbenchError
from learners.models import SiteLedgerEntry
from learners.services.federated_site import OfferInvalid, offer_create, offer_for, offer_set_enabled, offers_visible


class Command(BaseCommand):
    help = ("At a site: offer one of this workbench's projects to a federation run elsewhere, with the limits "
            "every request is checked against (--limits JSON: min_batch_size, max_steps, max_epochs, strategies, "
            "dp_max_clip_norm, dp_min_noise_multiplier, secure_aggregation, min_other_sites). --list shows the "
            "offers, --disable/--enable ID switches one, --ledger ID shows what was received, sent and refused.")

    def add_arguments(self, parser):
        parser.add_argument("--user", help="the project's manager making the offer (required)")
        parser.add_argument("--project", help="the project's id")
        parser.add_argument("--federation", help="the federation's name at its coordinator")
        parser.add_argument("--site-name", help="what the coordinator calls this site")
        parser.add_argument("--transport", default="celery", choices=["celery", "flower"])
        parser.add_argument("--coordinator-key", default="", help="celery: the coordinator's public key (hex)")
        parser.add_argument("--coordinator-certificate", default="",
                            help="flower: SHA-256 of the SuperLink's CA certificate (recorded)")
        parser.add_argument("--limits", default="{}", help="JSON object of limits; unset ones take the defaults")
        parser.add_argument("--holdout-fraction", type=float, default=0.2)
        parser.add_argument("--list", action="store_true")
        parser.add_argument("--disable", type=int, metavar="ID")
        parser.add_argument("--enable", type=int, metavar="ID")
        parser.add_argument("--ledger", type=int, metavar="ID")

    def handle(self, *args, **options):
        try:
            user = user_for_command(options["user"])
            if options["list"]:
                for offer in offers_visible(user):
                    self.stdout.write(json.dumps(_offer_dict(offer)))
                return
            for flag, enabled in (("disable", False), ("enable", True)):
                if options[flag] is not None:
                    self.stdout.write(json.dumps(_offer_dict(offer_set_enabled(user, options[flag], enabled))))
                    return
            if options["ledger"] is not None:
                offer = offer_for(user, options["ledger"])
                for entry in SiteLedgerEntry.objects.filter(offer=offer).order_by("pk"):
                    self.stdout.write(json.dumps({"at": entry.at.isoformat(), "direction": entry.direction,
                                                  "kind": entry.kind, "round": entry.round, "nbytes": entry.nbytes,
                                                  "arrays": entry.arrays, "meta": entry.meta,
                                                  "reason": entry.reason}))
                return
            if options["user"] is None:
                raise CommandError("--user: the offer records who made it; give the project manager's username")
            try:
                limits = json.loads(options["limits"])
            except json.JSONDecodeError as exc:
                raise CommandError(f"--limits: not JSON: {exc}") from None
            if not isinstance(limits, dict):
                raise CommandError("--limits: a JSON object")
            offer = offer_create(user=user, project_id=options["project"], federation=options["federation"] or "",
                                 site_name=options["site_name"] or "", transport=options["transport"],
                                 coordinator_key=options["coordinator_key"],
                                 coordinator_certificate=options["coordinator_certificate"], limits=limits,
                                 holdout_fraction=options["holdout_fraction"])
        except (OfferInvalid, WorkbenchError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(_offer_dict(offer)))


def _offer_dict(offer) -> dict:
    return {"offer_id": offer.pk, "federation": offer.federation, "site_name": offer.site_name,
            "project_id": offer.project_id, "transport": offer.transport, "enabled": offer.enabled,
            "limits": offer.limits, "holdout_fraction": offer.holdout_fraction}
