"""The shape every long-work management command shares: run here with a progress bar, or send by name and follow."""
from __future__ import annotations

import json
from typing import Callable

from django.core.management.base import BaseCommand, CommandError

from workbench.progress import ProgressBars, task_follow


def add_user_argument(parser) -> None:
    parser.add_argument("--user", metavar="USERNAME", default=None,
                        help="act for this user, with their permissions (default: as the operator, who may do "
                             "everything)")


def command_user(options):
    """The user a command acts for: `--user`, or annotate.access.OPERATOR."""
    from annotate.access import user_for_command

    try:
        return user_for_command(options.get("user"))
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def command_project(options, action: str = "manage", key: str = "project_id"):
    """The project `options[key]` if the command's user may do `action` on it (annotate.access); else CommandError."""
    from annotate.access import project_for
    from annotate.errors import NotAllowed, ProjectNotFound

    try:
        return project_for(command_user(options), options[key], action)
    except ProjectNotFound:
        raise CommandError(f"project {options[key]} does not exist (or --user may not see it)") from None
    except NotAllowed as exc:
        raise CommandError(f"project {options[key]}: {exc}") from None


class LongWorkCommand(BaseCommand):
    """Subclasses set `task_name` and implement `run_here(options, progress)` and `task_kwargs(options)`."""

    task_name = ""
    action = "manage"  # what --user must be allowed on the project (annotate.access)
    errors: tuple[type[Exception], ...] = ()

    def add_arguments(self, parser):
        parser.add_argument("project_id", type=int)
        add_user_argument(parser)
        parser.add_argument("--background", action="store_true",
                            help=f"send {self.task_name} to a worker by name and follow its progress")
        parser.add_argument("--timeout", type=float, default=3600.0,
                            help="with --background: seconds to wait for the worker (default 3600)")

    def task_kwargs(self, options) -> dict:
        return {"project_id": options["project_id"]}

    def run_here(self, options, progress) -> dict:
        raise NotImplementedError

    def handle(self, *args, **options):
        command_project(options, self.action)
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
