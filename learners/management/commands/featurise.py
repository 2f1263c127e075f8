"""manage.py featurise PROJECT_ID [--background]: cache features of new items and place them in the queue."""
from learners.services.features import FeaturisingFailed
from learners.services.training import featurise_and_order
from workbench.commands import LongWorkCommand


class Command(LongWorkCommand):
    help = "Featurise a project's new items and place them in the queue, with a progress bar (workbench.featurise)."
    task_name = "workbench.featurise"
    errors = (FeaturisingFailed,)

    def run_here(self, options, progress) -> dict:
        return featurise_and_order(project_id=options["project_id"], progress=progress)
