"""manage.py federated_run FEDERATION [--rounds N] [--background] | --cancel RUN_ID."""
import json

from django.core.management.base import BaseCommand, CommandError

from learners.federated.coordinator import FederationError
from learners.models import FederatedRun, Federation
from learners.services.federated import (
    FederationInvalid,
    federated_run_cancel,
    federated_run_create,
    federated_run_enqueue,
    federated_run_execute,
)
from workbench.commands import here_or_on_worker


class Command(BaseCommand):
    help = ("Run a federation for N rounds with a progress bar (here, or on a worker with --background: the "
            "workbench.federated_run task); each round is stored with participants, dropouts, bytes and ε. "
            "Or ask a run to stop with --cancel RUN_ID.")

    def add_arguments(self, parser):
        parser.add_argument("federation", nargs="?", help="the federation's id or name")
        parser.add_argument("--rounds", type=int, default=10, help="rounds (asynchronous: aggregations); default 10")
        parser.add_argument("--background", action="store_true",
                            help="send workbench.federated_run to a worker by name and follow its progress")
        parser.add_argument("--timeout", type=float, default=3600.0, help="with --background: seconds to wait")
        parser.add_argument("--cancel", type=int, metavar="RUN_ID", help="ask run RUN_ID to stop before its next round")

    def handle(self, *args, **options):
        if options["cancel"] is not None:
            if not FederatedRun.objects.filter(pk=options["cancel"]).exists():
                raise CommandError(f"federated run {options['cancel']} does not exist")
            federated_run_cancel(options["cancel"])
            run = FederatedRun.objects.get(pk=options["cancel"])
            self.stdout.write(json.dumps({"run_id": run.pk, "status": run.status,
                                          "cancel_requested": run.cancel_requested}))
            return
        key = options["federation"]
        if not key:
            raise CommandError("give a federation id or name (or --cancel RUN_ID)")
        federation = Federation.objects.filter(**({"pk": int(key)} if key.isdigit() else {"name": key})).first()
        if federation is None:
            raise CommandError(f"no federation {key!r}")
        try:
            run = federated_run_create(federation_id=federation.pk, rounds=options["rounds"])
        except FederationInvalid as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"federated run {run.pk} of {federation.name!r}: {options['rounds']} rounds")
        result = here_or_on_worker(
            self, background=options["background"], timeout=options["timeout"], task_name="workbench.federated_run",
            enqueue=lambda: federated_run_enqueue(run), errors=(FederationError,),
            run_here=lambda bars: federated_run_execute(run_id=run.pk, progress=bars),
        )
        self.stdout.write(json.dumps(result, default=str))
