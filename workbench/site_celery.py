"""The Celery app a site runs for a federation: one task, on the federation's broker, and nothing else.

A site's worker for a federation consumes only its own queue (``site.<name>``)
on the broker the federation shares, and knows only
``workbench.federated_local_train``: any other task sent there
(``workbench.export_annotations``, ``workbench.queue_status``, ...) is not
registered, so Celery rejects it and stores ``NotRegistered`` as its result;
the site's ledger records the refusal. The site's own work (imports,
retraining) runs on the site's own broker (``REDIS_URL``) by its ordinary
worker, which does not know the federated task.

`shared_task` adds every task to every Celery app in the process, so the
registry here keeps only the federated task visible: the consumer builds its
table of runnable tasks from what the registry lists.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from celery import Celery
from celery.app.registry import TaskRegistry
from celery.signals import task_unknown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workbench.settings")

FEDERATED_TASK = "workbench.federated_local_train"
ALIVE_PREFIX = "workbench:federation:alive:"
ALIVE_SECONDS = float(os.environ.get("WORKBENCH_SITE_ALIVE_SECONDS", "30"))  # a beat every third of it
logger = logging.getLogger(__name__)


class FederatedTaskOnly(TaskRegistry):
    """A registry that lists (and so lets the worker run) the federated task only.

    Other tasks Celery adds (its built-ins, the workbench's shared tasks imported along the way) are
    kept aside so the app's internals can still look them up by name, but never listed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden: dict[str, Any] = {}

    def __setitem__(self, key: str, value: Any) -> None:
        if key == FEDERATED_TASK:
            super().__setitem__(key, value)
        else:
            self.hidden[key] = value

    def __missing__(self, key: str) -> Any:
        if key in self.hidden:
            return self.hidden[key]
        return super().__missing__(key)


class SiteCelery(Celery):
    registry_cls = FederatedTaskOnly


def site_app(broker_url: str) -> Celery:
    """The site's federation app on `broker_url` (the federation's broker; results go there too)."""
    app = SiteCelery("workbench-site", broker=broker_url, backend=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False, broker_connection_retry_on_startup=True, task_track_started=True,
        result_expires=3600, accept_content=["json"], task_serializer="json", result_serializer="json",
    )

    @app.task(name=FEDERATED_TASK, shared=False)
    def federated_local_train(*, federation: str, message: str, issued_at: float = 0.0,
                              signature: str = "") -> str:
        """This site's answer to the coordinator (learners.services.federated_site.site_answer)."""
        from learners.services.federated_site import celery_answer

        return celery_answer(federation=federation, message=message, issued_at=issued_at, signature=signature)

    @task_unknown.connect(weak=False)
    def refused(sender: Any = None, name: str = "", id: str = "", **_: Any) -> None:
        if getattr(sender, "app", None) is not app:
            return
        from learners.services.federated_site import task_refused

        try:
            task_refused(name=str(name), task_id=str(id))
        except Exception:  # the refusal stands even if the ledger cannot be written
            logger.exception("could not record the refused task %s in the site's ledger", name)

    return app


def redis_for(broker_url: str):
    """A redis-py client for a Celery broker URL (kombu's ``redis+socket://`` is redis-py's ``unix://``)."""
    import redis

    if broker_url.startswith("redis+socket://"):
        broker_url = "unix://" + broker_url.removeprefix("redis+socket://")
    return redis.Redis.from_url(broker_url)


def queues_alive(broker_url: str, queues: list[str]) -> list[bool]:
    """Whether a site worker keeps each queue's liveness key on the broker fresh."""
    with redis_for(broker_url) as client:
        return [value is not None for value in client.mget([ALIVE_PREFIX + queue for queue in queues])]


def alive_beat(broker_url: str, queue: str, stop: threading.Event) -> None:
    """Tell the coordinator this site's queue is served: a key on the federation's broker, refreshed."""
    import redis

    client = redis_for(broker_url)
    while not stop.is_set():
        try:
            client.set(ALIVE_PREFIX + queue, str(time.time()), px=int(ALIVE_SECONDS * 1000))
        except redis.RedisError:
            logger.warning("cannot reach the federation's broker to say this site is alive", exc_info=True)
        stop.wait(ALIVE_SECONDS / 3)
    try:  # a worker that stops says so at once
        client.delete(ALIVE_PREFIX + queue)
    except redis.RedisError:
        pass
