"""manage.py score_pool PROJECT_ID [--background]: re-score the pool with the latest model."""
from learners.services.features import FeaturisingFailed
from learners.services.training import TrainingFailed, pool_rescore
from workbench.commands import LongWorkCommand


class Command(LongWorkCommand):
    help = "Re-score a project's open items with its latest model, with a progress bar (workbench.score_pool)."
    task_name = "workbench.score_pool"
    errors = (TrainingFailed, FeaturisingFailed)

    def run_here(self, options, progress) -> dict:
        return pool_rescore(project_id=options["project_id"], progress=progress)
