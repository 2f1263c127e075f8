"""manage.py site_worker --broker URL --site NAME: this site's worker for a federation's requests."""
import threading

from django.core.management.base import BaseCommand, CommandError

from learners.models import SiteOffer


class Command(BaseCommand):
    help = ("Serve this site's offers on a federation's broker: consume queue site.NAME and run only the "
            "federated training task (every request is checked against this site's offer and written to its "
            "ledger). The site's own work stays on its own broker and worker.")

    def add_arguments(self, parser):
        parser.add_argument("--broker", required=True, help="the federation's broker URL (redis://...)")
        parser.add_argument("--site", required=True, help="this site's name in its offers (queue site.NAME)")
        parser.add_argument("--hostname", default="", help="the worker's node name (default site-NAME@%%h)")
        parser.add_argument("--loglevel", default="INFO")

    def handle(self, *args, **options):
        from workbench.site_celery import alive_beat, site_app

        site = options["site"]
        if not SiteOffer.objects.filter(site_name=site, transport="celery").exists():
            self.stderr.write(f"this site has no Celery offer with site name {site!r} yet: every request is "
                              "refused until a project is offered (manage.py federation_offer)")
        if options["broker"].rstrip("/") in {_own_broker().rstrip("/")}:
            raise CommandError("--broker is this site's own broker (REDIS_URL): a federation's broker must be "
                               "a different one, or other parties could send tasks to this site's own workers")
        queue = f"site.{site}"
        app = site_app(options["broker"])
        stop = threading.Event()
        beat = threading.Thread(target=alive_beat, args=(options["broker"], queue, stop), daemon=True)
        beat.start()
        try:
            app.worker_main(["worker", "--queues", queue, "--pool", "solo", "--without-mingle", "--without-gossip",
                             "--hostname", options["hostname"] or f"site-{site}@%h",
                             "--loglevel", options["loglevel"]])
        finally:
            stop.set()
            beat.join(timeout=5)


def _own_broker() -> str:
    from django.conf import settings

    return str(settings.CELERY_BROKER_URL)
