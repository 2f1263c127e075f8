"""Progress bars for management commands, from a progress callback or a running task's state.

Every long service takes `progress(stage, done, total)` (import: `rows`), the
same callback its Celery task turns into task state. `ProgressBars` draws one
tqdm bar per stage on the command's stderr; `task_follow` polls a task sent by
name and draws the progress its worker reports, so `--background` shows the
same bar as running in the foreground.
"""
from __future__ import annotations

import time

from django.core.management.base import CommandError
from tqdm import tqdm

from workbench.activity import progress_of

UNITS = {"importing": "rows", "exporting": "items"}


class ProgressBars:
    """Callable as `progress(stage, done, total)`; a new stage closes the last bar and opens one."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.stage: str | None = None
        self.bar: tqdm | None = None

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage != self.stage or self.bar is None:
            self.close()
            self.stage = stage
            self.bar = tqdm(total=total, desc=stage, unit=UNITS.get(stage, "items"), file=self.stream,
                            dynamic_ncols=False, ncols=80, mininterval=0.2, leave=True)
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(max(0, done - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def task_follow(task_id: str, bars: ProgressBars, *, timeout: float, poll: float = 0.5):
    """Wait for a task sent by name, drawing its progress; its result, or CommandError on failure or timeout."""
    from workbench.celery import task_state

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            state, info = task_state(task_id)
            if state == "SUCCESS":
                return info
            if state in {"FAILURE", "REVOKED"}:
                message = info.get("exc_message", info) if isinstance(info, dict) else info
                raise CommandError(f"task {task_id} failed: {message}")
            if state == "PROGRESS":
                progress = progress_of(state, info)
                if progress["done"] is not None:
                    bars(progress["stage"] or "working", progress["done"], progress["total"])
            time.sleep(poll)
    finally:
        bars.close()
    raise CommandError(
        f"task {task_id} did not finish within {timeout:.0f} s (is a worker running? `make run` starts one); "
        "it may still run: its state stays readable by id"
    )
