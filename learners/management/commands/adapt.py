"""manage.py adapt PROJECT_ID [--meta-model ID] [--background]: adapt a meta-model to a project's labels."""
import uuid

from learners.services.features import FeaturisingFailed
from learners.services.meta import AdaptationFailed
from learners.services.training import TrainingFailed, model_version_adapt
from workbench.commands import LongWorkCommand


class Command(LongWorkCommand):
    help = ("Adapt a meta-model (default: the project's warm start) to the project's labels, store it as a model "
            "version and re-order the queue with it, with a progress bar (workbench.adapt).")
    task_name = "workbench.adapt"
    errors = (AdaptationFailed, TrainingFailed, FeaturisingFailed)

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--meta-model", type=int, default=None, dest="meta_model_id",
                            help="meta-model id (default: the project's warm start)")

    def task_kwargs(self, options) -> dict:
        return super().task_kwargs(options) | {"meta_model_id": options["meta_model_id"]}

    def run_here(self, options, progress) -> dict:
        return model_version_adapt(project_id=options["project_id"], meta_model_id=options["meta_model_id"],
                                   request_id=f"command-{uuid.uuid4().hex}", progress=progress)
