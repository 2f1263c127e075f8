"""manage.py retrain PROJECT_ID [--background]: train, score the pool, swap the queue order."""
import uuid

from learners.services.features import FeaturisingFailed
from learners.services.training import TrainingFailed, model_version_train
from workbench.commands import LongWorkCommand


class Command(LongWorkCommand):
    help = "Retrain a project's model and re-order its queue, with a progress bar (the workbench.retrain task)."
    task_name = "workbench.retrain"
    errors = (TrainingFailed, FeaturisingFailed)

    def run_here(self, options, progress) -> dict:
        return model_version_train(project_id=options["project_id"], request_id=f"command-{uuid.uuid4().hex}",
                                   progress=progress)
