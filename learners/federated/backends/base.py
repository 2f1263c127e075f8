"""The one interface every federated runtime implements: send bytes to a site, get bytes back.

A backend moves opaque messages (`learners.federated.wire`) between the
coordinator and the sites and says when they arrive; it knows nothing about
strategies, privacy or models. The coordinator drives both synchronous rounds
(send to the round's sites, collect until all replied or the deadline) and
asynchronous ones (keep every site busy, aggregate as replies arrive) through
the same four calls.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar


class BackendError(RuntimeError):
    """The runtime cannot reach or configure its sites; the message says which and why."""


@dataclass(frozen=True)
class Reply:
    """A site's answer, or its failure (``data`` None, ``error`` says why)."""

    site: str
    data: bytes | None
    at: float
    error: str = ""


class Backend(ABC):
    name: ClassVar[str]

    @abstractmethod
    def sites(self) -> list[str]:
        """The names of the sites this backend can reach."""

    @abstractmethod
    def send(self, site: str, data: bytes) -> None:
        """Hand `data` to `site`; its reply comes back through `receive`. One request per site at a time."""

    @abstractmethod
    def receive(self, deadline: float | None) -> Reply | None:
        """The next reply to arrive, or None when nothing is outstanding or `deadline` (in `now()` time) passed."""

    @abstractmethod
    def now(self) -> float:
        """The backend's clock in seconds: wall time, or simulated time for a simulation."""

    @abstractmethod
    def abandon(self, site: str) -> None:
        """Stop waiting for `site` (a dropout); a late reply from it must never be delivered."""

    def unreachable(self, sites: list[str]) -> dict[str, str]:
        """Those of `sites` known to be down, with why: they are dropouts without being sent anything."""
        return {}

    def close(self) -> None:  # noqa: B027 - most backends hold nothing to release
        """Release connections and processes."""
