"""manage.py export_annotations PROJECT_ID [--format jsonl|csv] [--path FILE] [--background]"""
from annotate.errors import WorkbenchError
from annotate.services.exporting import annotations_export
from workbench.commands import LongWorkCommand, command_project


class Command(LongWorkCommand):
    help = "Export a project's annotations (JSONL re-imports as seed labels; CSV one row per annotation)."
    task_name = "workbench.export_annotations"
    action = "view"  # as the REST export: members and staff
    errors = (WorkbenchError,)

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--path", help="file to write (default: <data dir>/exports/project-<id>-<time>.<format>)")

    def task_kwargs(self, options) -> dict:
        return {"project_id": options["project_id"], "format": options["format"], "path": options["path"]}

    def run_here(self, options, progress) -> dict:
        return annotations_export(project=command_project(options, self.action), file_format=options["format"], path=options["path"],
                                  progress=lambda done, total: progress("exporting", done, total))
