"""manage.py export_annotations PROJECT_ID [--format jsonl|csv] [--path FILE] [--background]"""
from django.core.management.base import CommandError

from annotate.errors import WorkbenchError
from annotate.models import Project
from annotate.services.exporting import annotations_export
from workbench.commands import LongWorkCommand


class Command(LongWorkCommand):
    help = "Export a project's annotations (JSONL re-imports as seed labels; CSV one row per annotation)."
    task_name = "workbench.export_annotations"
    errors = (WorkbenchError,)

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--path", help="file to write (default: <data dir>/exports/project-<id>-<time>.<format>)")

    def task_kwargs(self, options) -> dict:
        return {"project_id": options["project_id"], "format": options["format"], "path": options["path"]}

    def run_here(self, options, progress) -> dict:
        try:
            project = Project.objects.get(pk=options["project_id"])
        except Project.DoesNotExist:
            raise CommandError(f"project {options['project_id']} does not exist") from None
        return annotations_export(project=project, file_format=options["format"], path=options["path"],
                                  progress=lambda done, total: progress("exporting", done, total))
