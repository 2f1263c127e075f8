"""manage.py import_items PROJECT_ID FILE [--skip-bad-rows] [--skip-existing] [--user USERNAME]"""
from django.core.management.base import BaseCommand, CommandError

from annotate.errors import WorkbenchError
from annotate.services.import_readers import detect_format, rows_estimate
from annotate.services.importing import ImportFailed, import_file
from workbench.commands import add_user_argument, command_project
from workbench.progress import ProgressBars


class Command(BaseCommand):
    help = "Import items from a CSV or JSONL file into a project (all-or-nothing unless --skip-bad-rows)."

    def add_arguments(self, parser):
        parser.add_argument("project_id", type=int)
        parser.add_argument("path")
        parser.add_argument("--format", choices=["csv", "jsonl"])
        parser.add_argument("--skip-bad-rows", action="store_true")
        parser.add_argument("--skip-existing", action="store_true")
        add_user_argument(parser)  # importing is a manager's action (annotate.access)

    def handle(self, *args, **options):
        project = command_project(options, "manage")

        bars = ProgressBars(self.stderr)
        try:
            total = rows_estimate(options["path"], options["format"] or detect_format(options["path"]))
        except (OSError, WorkbenchError):
            total = None  # import_file says what is wrong with the path or format

        def progress(rows: int) -> None:
            bars("importing", rows, total)

        try:
            report = import_file(
                project=project, path=options["path"], file_format=options["format"],
                skip_bad_rows=options["skip_bad_rows"], skip_existing=options["skip_existing"],
                progress=progress,
            )
        except ImportFailed as exc:
            raise CommandError("import rejected, nothing written:\n  " + "\n  ".join(exc.errors)) from None
        except WorkbenchError as exc:
            raise CommandError(str(exc)) from None
        finally:
            bars.close()
        self.stdout.write(
            f"imported {report.rows_imported} of {report.rows_read} rows "
            f"({report.labels_imported} with labels, {report.rows_skipped} skipped)"
        )
        for error in report.errors:
            self.stdout.write(f"  skipped {error}")
