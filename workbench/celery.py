"""The Celery app, and `enqueue`, the one way the workbench's own code sends tasks.

Tasks live in each app's tasks.py under stable `workbench.*` names.
"""
import functools
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workbench.settings")
# One OpenMP/torch thread per process unless the deployment says otherwise: workers are
# already one process per core, and torch's default (a thread per core in every process)
# made small MLP fits about 50x slower when processes competed (9 s instead of 0.19 s).
# Set before anything imports torch; every process imports this module first.
os.environ.setdefault("OMP_NUM_THREADS", "1")

app = Celery("workbench")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@functools.cache
def _sender() -> Celery:
    # Broker only, no result backend: Celery's Redis backend subscribes the
    # sender to every task's result, which a web process never reads (the
    # subscriptions pile up, and a Redis outage turns into a RuntimeError
    # after retries). The worker still stores state, progress and results.
    from django.conf import settings

    sender = Celery("workbench-sender", broker=settings.CELERY_BROKER_URL, set_as_current=False)
    sender.conf.task_publish_retry_policy = settings.CELERY_TASK_PUBLISH_RETRY_POLICY
    sender.conf.broker_connection_retry_on_startup = True
    sender.conf.task_routes = settings.CELERY_TASK_ROUTES  # long work to its own queue
    return sender


def enqueue(name: str, *, task_id: str | None = None, **kwargs) -> str:
    """Send task `name` with keyword arguments; returns the task id.

    Raises kombu.exceptions.OperationalError when the broker cannot be reached.
    Tasks about a project (a `project_id` argument) are listed on its page with
    their progress (workbench.activity).
    """
    sent = _sender().send_task(name, kwargs=kwargs, task_id=task_id).id
    if "project_id" in kwargs:  # so the project's pages can show the task's progress
        from workbench.activity import task_recorded

        task_recorded(project_id=kwargs["project_id"], name=name, task_id=sent)
    return sent


def broker_holds(task_ids: set[str]) -> set[str]:
    """Those of `task_ids` whose message Redis holds: queued (default and long queue) or delivered, not acknowledged."""
    if not task_ids:
        return set()
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    blobs = [blob for queue in (settings.CELERY_TASK_DEFAULT_QUEUE, settings.LONG_QUEUE)
             for blob in client.lrange(queue, 0, -1)]
    blobs += client.hvals("unacked")  # kombu's Redis transport keeps delivered messages here until acked
    return {task_id for task_id in task_ids if any(task_id.encode() in blob for blob in blobs)}


def task_state(task_id: str) -> tuple[str, object]:
    """(state, result or progress meta) of a task, read once from the result backend.

    A plain read: an AsyncResult would subscribe to the task's channel and
    unsubscribe whenever it happens to be garbage-collected.
    """
    meta = app.backend.get_task_meta(task_id)
    return meta["status"], meta.get("result")
