"""manage.py meta_train --name N --sources 1,2 [--algorithm A] [--hyper JSON] [--background] | --cancel ID."""
import json

from django.core.management.base import BaseCommand, CommandError

from annotate.access import can_cancel_meta_model, meta_models_visible
from learners.services.meta import (
    MetaModelInvalid,
    meta_model_cancel,
    meta_model_create,
    meta_model_enqueue,
    meta_model_train,
)
from learners.services.meta_data import MetaDataInvalid
from workbench.commands import add_user_argument, command_user, here_or_on_worker


class Command(BaseCommand):
    help = ("Create a meta-model from source projects that share modality and featuriser, and meta-train it "
            "with a progress bar (here, or on a worker with --background: the workbench.meta_train task); "
            "or cancel one with --cancel ID.")

    def add_arguments(self, parser):
        parser.add_argument("--name", help="a name for the meta-model")
        parser.add_argument("--sources", help="comma-separated source project ids")
        parser.add_argument("--algorithm", default="protonet", help="protonet (default), maml, fomaml, anil, reptile")
        parser.add_argument("--hyper", default="{}", help='hyper-parameters as JSON, e.g. \'{"steps": 300}\'')
        parser.add_argument("--background", action="store_true",
                            help="send workbench.meta_train to a worker by name and follow its progress")
        parser.add_argument("--timeout", type=float, default=3600.0, help="with --background: seconds to wait")
        parser.add_argument("--cancel", type=int, metavar="ID", help="ask meta-model ID's training to stop")
        add_user_argument(parser)

    def handle(self, *args, **options):
        user = command_user(options)
        if options["cancel"] is not None:
            meta_model = meta_models_visible(user).filter(pk=options["cancel"]).first()
            if meta_model is None or not can_cancel_meta_model(user, meta_model):
                raise CommandError(f"meta-model {options['cancel']} does not exist (or --user may not cancel it)")
            meta_model = meta_model_cancel(meta_model)
            self.stdout.write(json.dumps({"meta_model_id": meta_model.pk, "status": meta_model.status,
                                          "cancel_requested": meta_model.cancel_requested}))
            return
        if not options["name"] or not options["sources"]:
            raise CommandError("give --name and --sources (or --cancel ID)")
        try:
            sources = [int(part) for part in options["sources"].split(",") if part.strip()]
        except ValueError:
            raise CommandError(f"--sources: expected comma-separated project ids, got {options['sources']!r}") from None
        try:
            hyper = json.loads(options["hyper"])
        except json.JSONDecodeError as exc:
            raise CommandError(f"--hyper: not JSON ({exc})") from None
        try:
            meta_model = meta_model_create(user=user, name=options["name"], source_project_ids=sources,
                                           algorithm=options["algorithm"], hyper_parameters=hyper)
        except MetaModelInvalid as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"meta-model {meta_model.pk} created ({meta_model.algorithm}, {meta_model.featuriser})")
        result = here_or_on_worker(
            self, background=options["background"], timeout=options["timeout"], task_name="workbench.meta_train",
            enqueue=lambda: meta_model_enqueue(meta_model), errors=(MetaDataInvalid,),
            run_here=lambda bars: meta_model_train(meta_model_id=meta_model.pk, progress=bars),
        )
        self.stdout.write(json.dumps(result, default=str))
