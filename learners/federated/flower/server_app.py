"""The Flower ServerApp: our Coordinator, over the SuperLink's Grid, for one federation run.

It reads the plan and the site list from the run-config, says hello to every
connected SuperNode to learn which node is which site (and which are dead), runs
the plan's synchronous rounds with `learners.federated.coordinator.Coordinator`
over `FlowerGridBackend`, and prints one machine-readable line per event to its
log, where `flwr log <run-id> --stream` (learners/federated/flower_run.py)
reads them:

    WORKBENCH-FEDERATION {"event": "hello", "nodes": {site: node id}, "dead": [...], "refused": {...}}
    WORKBENCH-FEDERATION {"event": "round", <RoundResult fields>, "payloads": [<PayloadRecord.as_dict>]}
    WORKBENCH-FEDERATION {"event": "final", "version": n, "rounds": n, "weights": <base64 wire message>}
    WORKBENCH-FEDERATION {"event": "error", "error": "<what went wrong>"}
"""
from __future__ import annotations

import base64
import json
import sys
from typing import Any, Iterable

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from learners.federated.backends.flower_grid import FlowerGridBackend, nodes_greet
from learners.federated.coordinator import Coordinator, FederationError, plan_from_dict
from learners.federated.wire import Message, PayloadAudit, PayloadRecord, message_decode, message_encode

EVENT_PREFIX = "WORKBENCH-FEDERATION "

app = ServerApp()


def emit(event: str, **fields: Any) -> None:
    """One event line on stdout, which the SuperLink keeps as this run's log."""
    print(EVENT_PREFIX + json.dumps({"event": event, **fields}, separators=(",", ":")), flush=True)
    sys.stdout.flush()


_RAW: dict[int, str] = {}  # id of an audit record -> its message's bytes, base64 (run-config payload-bytes)


def _keep_bytes(audit: PayloadAudit) -> None:
    """Put each message's bytes (base64) in its audit record's event too, for a byte scan of what crossed."""
    record = audit.record

    def keeping(direction: str, site: str, data: bytes, **kwargs: Any) -> PayloadRecord:
        entry = record(direction, site, data, **kwargs)
        _RAW[id(entry)] = base64.b64encode(bytes(data)).decode("ascii")
        return entry

    audit.record = keeping  # type: ignore[method-assign]


def _payloads(records: Iterable[PayloadRecord]) -> list[dict[str, Any]]:
    return [{**r.as_dict(), **({"bytes": _RAW[id(r)]} if id(r) in _RAW else {})} for r in records]


def _config_text(config: dict[str, Any], key: str) -> str:
    value = config.get(key, "")
    if not isinstance(value, str) or not value:
        raise FederationError(f"run-config {key!r} is missing or empty; flwr run --run-config must set it")
    return value


@app.main()
def main(grid: Grid, context: Context) -> None:
    try:
        _run(grid, context.run_config)
    except Exception as exc:  # reported to the log reader, then re-raised so Flower marks the run failed
        emit("error", error=f"{type(exc).__name__}: {exc}")
        raise


def _run(grid: Grid, config: dict[str, Any]) -> None:
    federation = _config_text(config, "federation")
    sites = [site for site in _config_text(config, "sites").split(",") if site]
    plan = plan_from_dict(json.loads(base64.b64decode(_config_text(config, "plan"))))
    weights = None
    if config.get("weights"):
        weights = message_decode(base64.b64decode(str(config["weights"]))).arrays
    poll = float(config.get("poll-seconds", 0.05))
    audit = PayloadAudit()
    if config.get("payload-bytes"):
        _keep_bytes(audit)
    greeting = nodes_greet(grid, federation=federation, expected=sites,
                           timeout=float(config.get("hello-timeout", 20.0)), poll_seconds=poll, audit=audit)
    missing = sorted(set(sites) - set(greeting.nodes))
    emit("hello", **greeting.as_dict(), missing=missing, payloads=_payloads(audit.records))
    if not greeting.nodes:
        raise FederationError(f"no site of federation {federation!r} answered the hello "
                              f"(dead nodes {greeting.dead}, refused {greeting.refused})")
    # the plan's site order, so that sampling and the secure-aggregation client ids do not depend on node ids
    nodes = {site: greeting.nodes[site] for site in sites if site in greeting.nodes}
    backend = FlowerGridBackend(grid, nodes, federation=federation, poll_seconds=poll)
    coordinator = Coordinator(backend, plan, weights=weights, audit=audit)
    for _ in range(plan.rounds):
        result = coordinator.round()
        emit("round", **result.as_dict(),
             payloads=_payloads(record for record in audit.records if record.round == result.number))
    final = message_encode(Message(kind="weights", meta={"version": coordinator.version},
                                   arrays=coordinator.weights))
    emit("final", version=coordinator.version, rounds=len(coordinator.results), epsilon=coordinator.epsilon(),
         weights=base64.b64encode(final).decode("ascii"))
