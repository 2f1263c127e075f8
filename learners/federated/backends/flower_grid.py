"""Sites behind Flower SuperNodes; the coordinator runs inside the ServerApp and talks through its Grid.

Each of our wire messages travels as bytes in one `ConfigRecord` (``workbench``)
of a Flower message, together with the federation's name so the site knows
which of its offers the message is for. Replies are collected with our own
`Grid.push_messages` / `Grid.pull_messages` loop: `Grid.send_and_receive`
sleeps 3 s between polls, which would be most of a round on a small model.

A site is known to the backend by the node id its SuperNode answered the
"hello" from (`nodes_greet`); a node that does not answer in time is dead and
takes no part. Flower has no way to cancel a pushed message, so `abandon` only
forgets it: a late reply is never pulled, and the SuperLink drops it at its TTL.

Runs only inside a Flower ServerApp (a `Message` needs the run's identity).
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from learners.federated.backends.base import Backend, BackendError, Reply
from learners.federated.wire import Message as WireMessage
from learners.federated.wire import PayloadAudit, WireError, message_decode, message_encode

RECORD = "workbench"  # the ConfigRecord that carries our bytes, both ways
TRAIN_TYPE = "train"
HELLO_TYPE = "query.hello"


def flower_content(data: bytes, *, federation: str | None = None) -> RecordDict:
    """The Flower content that carries one wire message (and, towards a site, the federation's name)."""
    record: dict[str, int | float | str | bytes | bool | list[int] | list[float] | list[str] | list[bytes]
                  | list[bool]] = {"message": bytes(data)}
    if federation is not None:
        record["federation"] = federation
    return RecordDict({RECORD: ConfigRecord(record)})


def flower_payload(message: Message) -> bytes:
    """The wire bytes inside a Flower message; BackendError when it carries none."""
    if message.has_error():
        raise BackendError(f"node {message.metadata.src_node_id} failed: "
                           f"code {message.error.code}: {message.error.reason}")
    if RECORD not in message.content.config_records:
        raise BackendError(f"node {message.metadata.src_node_id} answered without a {RECORD!r} record")
    data = message.content.config_records[RECORD].get("message")
    if not isinstance(data, bytes):
        raise BackendError(f"node {message.metadata.src_node_id} answered without message bytes")
    return data


class FlowerGridBackend(Backend):
    """Sites by name, each the SuperNode (node id) that said hello as that site.

    Parameters
    ----------
    grid : flwr.serverapp.Grid
        The ServerApp's grid.
    nodes : mapping of site name to node id
    federation : str
        Sent with every message: the site answers under its offer for this federation.
    poll_seconds : float
        Between two `pull_messages` calls while replies are outstanding.
    ttl : float or None
        Flower's round-trip lifetime of each message (None: Flower's default, 12 h).
    """

    name = "flower"

    def __init__(self, grid: Grid, nodes: Mapping[str, int], *, federation: str, poll_seconds: float = 0.05,
                 ttl: float | None = None) -> None:
        if not nodes:
            raise BackendError("no sites: no SuperNode said hello for this federation")
        self._grid = grid
        self._nodes = dict(nodes)
        self._federation = federation
        self._poll = poll_seconds
        self._ttl = ttl
        self._pending: dict[str, str] = {}  # Flower message id -> site
        self._outstanding: dict[str, str] = {}  # site -> Flower message id
        self._arrived: deque[Reply] = deque()
        self._sent = 0

    def sites(self) -> list[str]:
        return list(self._nodes)

    def send(self, site: str, data: bytes) -> None:
        if site in self._outstanding:
            raise BackendError(f"site {site!r} still has a request outstanding")
        if site not in self._nodes:
            raise BackendError(f"unknown site {site!r}")
        self._sent += 1
        message = Message(flower_content(data, federation=self._federation), dst_node_id=self._nodes[site],
                          message_type=TRAIN_TYPE, group_id=str(self._sent), ttl=self._ttl)
        ids = list(self._grid.push_messages([message]))
        if len(ids) != 1 or not ids[0]:
            raise BackendError(f"the SuperLink did not accept the message for site {site!r} "
                               f"(node {self._nodes[site]}); see the ServerApp log")
        self._pending[ids[0]] = site
        self._outstanding[site] = ids[0]

    def _pull(self) -> None:
        for message in self._grid.pull_messages(list(self._pending)):
            site = self._pending.pop(message.metadata.reply_to_message_id, None)
            if site is None:
                continue  # abandoned meanwhile
            del self._outstanding[site]
            try:
                self._arrived.append(Reply(site=site, data=flower_payload(message), at=self.now()))
            except BackendError as exc:
                self._arrived.append(Reply(site=site, data=None, at=self.now(), error=str(exc)))

    def receive(self, deadline: float | None) -> Reply | None:
        while True:
            if self._arrived:
                return self._arrived.popleft()
            if not self._pending:
                return None
            self._pull()
            if self._arrived:
                continue
            if deadline is not None and self.now() >= deadline:
                return None
            time.sleep(self._poll if deadline is None else max(0.0, min(self._poll, deadline - self.now())))

    def now(self) -> float:
        return time.monotonic()

    def abandon(self, site: str) -> None:
        message_id = self._outstanding.pop(site, None)
        if message_id is not None:
            self._pending.pop(message_id, None)
        self._arrived = deque(r for r in self._arrived if r.site != site)


@dataclass
class Greeting:
    """Who answered the hello: site name -> node id, and why the others take no part."""

    nodes: dict[str, int] = field(default_factory=dict)
    dead: list[int] = field(default_factory=list)  # no answer within the liveness timeout
    refused: dict[int, str] = field(default_factory=dict)  # node id -> reason (the site's, or ours)

    def as_dict(self) -> dict[str, object]:
        return {"nodes": dict(self.nodes), "dead": list(self.dead),
                "refused": {str(k): v for k, v in self.refused.items()}}


def nodes_greet(grid: Grid, *, federation: str, expected: Iterable[str], timeout: float = 20.0,
                poll_seconds: float = 0.05, audit: PayloadAudit | None = None) -> Greeting:
    """Say hello to every connected node; keep those that answer as one of the `expected` sites.

    A node answers "hello" with its site name, or "refused" with a reason (it has no offer for this
    federation). A name that is not expected, or that a second node also claims, is refused here.
    Every hello that crosses is recorded in `audit` (round None), under the node's id until it names itself.
    """
    wanted = set(expected)
    data = message_encode(WireMessage(kind="hello", meta={"federation": federation}))
    node_ids = sorted(grid.get_node_ids())
    greeting = Greeting()
    if not node_ids:
        return greeting
    messages = [Message(flower_content(data, federation=federation), dst_node_id=node, message_type=HELLO_TYPE,
                        group_id="hello", ttl=max(timeout, 10.0)) for node in node_ids]
    ids = list(grid.push_messages(messages))
    pending: dict[str, int] = {message_id: node for message_id, node in zip(ids, node_ids, strict=True) if message_id}
    for node in node_ids:
        if audit is not None:
            audit.record("out", f"node-{node}", data)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for reply in grid.pull_messages(list(pending)):
            message_id = reply.metadata.reply_to_message_id
            if message_id in pending:
                _greeting_take(greeting, pending.pop(message_id), reply, wanted, audit)
        if pending:
            time.sleep(poll_seconds)
    greeting.dead = sorted(pending.values())
    return greeting


def _greeting_take(greeting: Greeting, node: int, reply: Message, wanted: set[str],
                   audit: PayloadAudit | None) -> None:
    try:
        data = flower_payload(reply)
        answer = message_decode(data)
    except (BackendError, WireError) as exc:
        greeting.refused[node] = str(exc)
        return
    site = str(answer.meta.get("site", "")) if answer.kind == "hello" else ""
    if audit is not None:
        audit.record("in", site or f"node-{node}", data)
    if answer.kind == "refused":
        greeting.refused[node] = f"refused: {answer.meta.get('reason', '')}"
    elif answer.kind != "hello" or not site:
        greeting.refused[node] = f"answered {answer.kind!r} without a site name, expected 'hello'"
    elif site not in wanted:
        greeting.refused[node] = f"says it is site {site!r}, which is not in this federation"
    elif site in greeting.nodes:
        greeting.refused[node] = f"says it is site {site!r}, which node {greeting.nodes[site]} already is"
    else:
        greeting.nodes[site] = node
