"""The shape every long-work management command shares: run here with a progress bar, or send by name and follow."""
from __future__ import annotations

import json
from typing import Callable

from django.core.management.base import BaseCommand, CommandError

from workbench.progress import ProgressBars, task_follow


class LongWorkCommand(BaseCommand):
    """Subclasses set `task_name` and implement `run_here(options, progress)` and `task_kwargs(options)`."""

    task_name = ""
    errors: tuple[type[Exception], ...] = ()

    def add_arguments(self, parser):
        parser.add_argument("project_id", type=int)
        parser.add_argument("--background", action="store_true",
                            help=f"send {self.task_name} to a worker by name and follow its progress")
        parser.add_argument("--timeout", type=float, default=3600.0,
                            help="with --background: seconds to wait for the worker (default 3600)")

    def task_kwargs(self, options) -> dict:
        return {"project_id": options["project_id"]}

    def run_here(self, options, progress) -> dict:
        raise NotImplementedError

    def handle(self, *args, **options):
        from annotate.models import Project

        if not Project.objects.filter(pk=options["project_id"]).exists():
            raise CommandError(f"project {options['project_id']} does not exist")
        bars = ProgressBars(self.stderr)
        if options["background"]:
            from workbench.celery import enqueue

            task_id = enqueue(self.task_name, **self.task_kwargs(options))
            self.stderr.write(f"sent {self.task_name} as task {task_id}")
            result = task_follow(task_id, bars, timeout=options["timeout"])
        else:
            try:
                result = self.run_here(options, bars)
            except self.errors as exc:
                raise CommandError(str(exc)) from None
            finally:
                bars.close()
        self.stdout.write(json.dumps(result, default=str))


def here_or_on_worker(command: BaseCommand, *, background: bool, timeout: float, task_name: str,
                      enqueue: Callable[[], str], run_here: Callable[[ProgressBars], dict],
                      errors: tuple[type[Exception], ...] = ()) -> dict:
    """Run `run_here` with progress bars, or `enqueue` the task and draw the progress the worker reports."""
    bars = ProgressBars(command.stderr)
    if background:
        task_id = enqueue()
        command.stderr.write(f"sent {task_name} as task {task_id}")
        return task_follow(task_id, bars, timeout=timeout)
    try:
        return run_here(bars)
    except errors as exc:
        raise CommandError(str(exc)) from None
    finally:
        bars.close()
