"""In-process simulation of many sites on a simulated clock.

Sites are `learners.federated.site.Site` objects (or made on demand by a
factory, so 10,000 simulated clients never exist at once). Each reply is
computed when it is *received*, in arrival order, so outstanding requests cost
one heap entry each, and memory stays bounded by the model size times what the
strategy keeps, not by the number of clients.

Time is simulated: a site's reply arrives `latency(site, rng)` seconds after it
was sent (default 1 s), which is how stragglers are modelled for comparing
synchronous and asynchronous rounds. `fail(site, request_number)` returning
True makes that request a dropout (no reply ever arrives).
"""
from __future__ import annotations

import heapq
import itertools
from typing import Callable, Mapping

import numpy as np

from learners.federated.backends.base import Backend, BackendError, Reply
from learners.federated.site import Site


class InProcessBackend(Backend):
    name = "inprocess"

    def __init__(
        self,
        sites: Mapping[str, Site] | None = None,
        *,
        site_names: list[str] | None = None,
        site_factory: Callable[[str], Site] | None = None,
        latency: Callable[[str, np.random.Generator], float] | None = None,
        fail: Callable[[str, int], bool] | None = None,
        seed: int = 0,
    ) -> None:
        if sites is None and (site_names is None or site_factory is None):
            raise BackendError("give `sites`, or `site_names` with a `site_factory`")
        self._sites = dict(sites or {})
        self._names = list(site_names) if site_names is not None else list(self._sites)
        self._factory = site_factory
        self._latency = latency or (lambda site, rng: 1.0)
        self._fail = fail or (lambda site, number: False)
        self._rng = np.random.default_rng(seed)
        self._clock = 0.0
        self._heap: list[tuple[float, int, str, bytes]] = []
        self._pending: dict[str, int] = {}  # site -> sequence number of its outstanding request
        self._sequence = itertools.count()
        self._requests: dict[str, int] = {}

    def sites(self) -> list[str]:
        return list(self._names)

    def _site(self, name: str) -> Site:
        site = self._sites.get(name)
        if site is None:
            if self._factory is None:
                raise BackendError(f"unknown site {name!r}")
            site = self._factory(name)
        return site

    def send(self, site: str, data: bytes) -> None:
        if site in self._pending:
            raise BackendError(f"site {site!r} still has a request outstanding")
        number = self._requests.get(site, 0)
        self._requests[site] = number + 1
        sequence = next(self._sequence)
        self._pending[site] = sequence
        if self._fail(site, number):
            return  # a dropout: no reply will ever arrive
        arrival = self._clock + float(self._latency(site, self._rng))
        heapq.heappush(self._heap, (arrival, sequence, site, data))

    def receive(self, deadline: float | None) -> Reply | None:
        while self._heap:
            arrival, sequence, site, data = self._heap[0]
            if deadline is not None and arrival > deadline:
                self._clock = max(self._clock, deadline)
                return None
            heapq.heappop(self._heap)
            if self._pending.get(site) != sequence:
                continue  # abandoned: its reply is dropped
            del self._pending[site]
            self._clock = max(self._clock, arrival)
            return Reply(site=site, data=self._site(site).handle(data), at=self._clock)
        if deadline is not None and self._pending:
            self._clock = max(self._clock, deadline)
        return None

    def now(self) -> float:
        return self._clock

    def abandon(self, site: str) -> None:
        self._pending.pop(site, None)
