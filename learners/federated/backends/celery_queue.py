"""Each site a separate workbench deployment; the coordinator reaches it through its own queue.

A site runs its own database and a worker consuming ``site.<slug>``; the
coordinator sends ``workbench.federated_local_train`` there by name (the
message base64-encoded in the task's keyword arguments), then polls the result
backend until the reply arrives or the round's deadline passes. A site whose
worker died, or that is slow, is abandoned: its task is revoked and, should its
result still arrive, it is never read. Tasks carry an expiry, so a site that
comes back later does not train for a round long gone.

Each request carries what `envelope(site, data)` adds to the task's keyword
arguments: the federation's name and the coordinator's signature
(`learners.federated.identity`), which the site checks against its offer. A
site's worker keeps a key alive on the broker while it serves its queue
(`workbench.site_celery.alive_beat`, read through `alive(queues)`); a site without one is a dropout at once
instead of costing the round's whole timeout.
"""
from __future__ import annotations

import base64
import time
from typing import Any, Callable, Mapping

from celery import Celery

from learners.federated.backends.base import Backend, BackendError, Reply


class CeleryQueueBackend(Backend):
    name = "celery"

    def __init__(self, app: Celery, sites: Mapping[str, Mapping[str, Any]], *,
                 task_name: str = "workbench.federated_local_train", poll_seconds: float = 0.05,
                 expires_seconds: float = 3600.0,
                 envelope: Callable[[str, bytes], dict[str, Any]] | None = None,
                 alive: Callable[[list[str]], list[bool]] | None = None) -> None:
        if not sites:
            raise BackendError("no sites: give each site's queue")
        self._app = app
        self._sites = {name: dict(entry) for name, entry in sites.items()}
        for name, entry in self._sites.items():
            if not entry.get("queue"):
                raise BackendError(f"site {name!r} has no queue")
        self._task_name = task_name
        self._poll = poll_seconds
        self._expires = expires_seconds
        self._pending: dict[str, str] = {}  # site -> task id
        self._envelope = envelope
        self._alive = alive

    def sites(self) -> list[str]:
        return list(self._sites)

    def send(self, site: str, data: bytes) -> None:
        if site in self._pending:
            raise BackendError(f"site {site!r} still has a request outstanding")
        entry = self._sites[site]
        kwargs = {**entry.get("kwargs", {}), **(self._envelope(site, data) if self._envelope else {}),
                  "message": base64.b64encode(data).decode("ascii")}
        result = self._app.send_task(self._task_name, kwargs=kwargs, queue=entry["queue"], expires=self._expires)
        self._pending[site] = result.id

    def receive(self, deadline: float | None) -> Reply | None:
        while self._pending:
            for site, task_id in list(self._pending.items()):
                # A plain read of the stored state: an AsyncResult would subscribe to every task's channel.
                meta = self._app.backend.get_task_meta(task_id)
                state = meta["status"]
                if state == "SUCCESS":
                    del self._pending[site]
                    self._app.backend.forget(task_id)
                    return Reply(site=site, data=base64.b64decode(meta["result"]), at=self.now())
                if state in ("FAILURE", "REVOKED"):
                    del self._pending[site]
                    return Reply(site=site, data=None, at=self.now(), error=f"site task {state.lower()}: "
                                 f"{type(meta.get('result')).__name__}: {meta.get('result')}")
            if deadline is not None and self.now() >= deadline:
                return None
            time.sleep(self._poll)
        return None

    def unreachable(self, sites: list[str]) -> dict[str, str]:
        if self._alive is None or not sites:
            return {}
        alive = self._alive([self._sites[site]["queue"] for site in sites])
        return {site: "no worker serves its queue (no liveness beat on the broker)"
                for site, up in zip(sites, alive) if not up}

    def now(self) -> float:
        return time.monotonic()

    def abandon(self, site: str) -> None:
        task_id = self._pending.pop(site, None)
        if task_id is not None:
            self._app.control.revoke(task_id)
