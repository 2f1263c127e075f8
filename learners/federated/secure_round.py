"""A synchronous round under secure aggregation: the coordinator learns Σ n_i·Δ_i, Σ n_i and nothing else.

Four exchanges through the same backend as any round (Bonawitz et al. 2017,
semi-honest): the train message, answered with a site's two public keys; the
key list, answered with encrypted key shares for each peer; the shares routed
to each site, answered with its masked vector; the list of who sent one,
answered with the shares that remove the masks of those who did not. A site
that misses a deadline drops out of the rest of the round; the sum is
recovered while at least the threshold (n − ⌊n/3⌋) of sites stay.

Each site's masked vector is n·Δ (flattened), n and n·accuracy_before, so the
round reports the example-weighted global accuracy without any site's own.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from learners.federated.backends.base import Reply
from learners.federated.secure_aggregation import SecAggServer, default_threshold, max_scale_bits
from learners.federated.updates import arrays_unflatten
from learners.federated.wire import Message, message_decode, message_encode

if TYPE_CHECKING:
    from learners.federated.coordinator import Coordinator, RoundResult

#: Fixed-point range of every masked value (n·Δ, n): fixed before the round, as the protocol needs.
SECURE_CLIP = float(2**14)


def _bytes_arrays(prefix: str, values: dict[int, bytes]) -> dict[str, np.ndarray]:
    return {f"{prefix}.{key}": np.frombuffer(value, dtype=np.uint8) for key, value in values.items()}


def _arrays_bytes(prefix: str, arrays: dict[str, np.ndarray]) -> dict[int, bytes]:
    start = len(prefix) + 1
    return {int(name[start:]): array.astype(np.uint8).tobytes() for name, array in arrays.items()
            if name.startswith(prefix + ".")}


def secure_round(coordinator: "Coordinator") -> "RoundResult":
    plan, backend, audit = coordinator.plan, coordinator.backend, coordinator.audit
    number = len(coordinator.results) + 1
    wall, started = time.perf_counter(), backend.now()
    participants = coordinator._sample()
    ids = {site: i for i, site in enumerate(participants)}
    sites_of = {i: site for site, i in ids.items()}
    n = len(participants)
    threshold = default_threshold(n)
    scale_bits = max_scale_bits(n, SECURE_CLIP)
    length = sum(int(np.size(v)) for v in coordinator.weights.values()) + 2
    server = SecAggServer(list(range(n)), threshold=threshold, vector_length=length, scale_bits=scale_bits,
                          clip=SECURE_CLIP)
    dropouts: dict[str, str] = dict(backend.unreachable(participants))

    def exchange(messages: dict[str, bytes], expect: str, take: Callable[[int, Message], None]) -> None:
        for site, data in messages.items():
            audit.record("out", site, data, round=number)
            backend.send(site, data)
        deadline = backend.now() + plan.timeout
        waiting = set(messages)
        while waiting:
            reply: Reply | None = backend.receive(deadline)
            if reply is None:
                break
            waiting.discard(reply.site)
            if reply.data is None:
                dropouts[reply.site] = reply.error or "failed"
                continue
            audit.record("in", reply.site, reply.data, round=number)
            message = message_decode(reply.data)
            if message.kind != expect:
                dropouts[reply.site] = f"refused: {message.meta.get('reason', message.kind)}"
                continue
            take(ids[reply.site], message)
        for site in sorted(waiting):
            backend.abandon(site)
            dropouts[site] = f"no reply within {plan.timeout:g} s ({expect})"

    secure_meta = {"n_clients": n, "threshold": threshold, "scale_bits": scale_bits, "clip": SECURE_CLIP}
    seed = int(coordinator._rng.integers(2**31))  # one seed for the round, as in a plain round
    train = {site: coordinator._train_message(number, expected_sites=n, seed=seed,
                                              extra={"secure": {**secure_meta, "client_id": ids[site]}})
             for site in participants if site not in dropouts}
    exchange(train, "secagg_keys", lambda i, m: server.receive_keys(i, {k: m.arrays[k].tobytes()
                                                                        for k in ("c_pk", "s_pk")}))
    keys = server.broadcast_keys()
    key_arrays = {f"{kind}.{i}": np.frombuffer(k[kind], dtype=np.uint8) for i, k in keys.items() for kind in k}
    share_message = message_encode(Message(kind="secagg_share", meta={"round": number}, arrays=key_arrays))
    exchange({sites_of[i]: share_message for i in keys}, "secagg_shares",
             lambda i, m: server.receive_shares(i, _arrays_bytes("ct", m.arrays)))
    routed = server.route_shares()
    exchange({sites_of[v]: message_encode(Message(kind="secagg_input", meta={"round": number},
                                                  arrays=_bytes_arrays("ct", cts))) for v, cts in routed.items()},
             "secagg_masked", lambda i, m: server.receive_masked_input(i, m.arrays["y"]))
    survivors, dropped = server.unmask_request()
    unmask = message_encode(Message(kind="secagg_unmask", meta={"round": number, "survivors": sorted(survivors),
                                                                "dropped": sorted(dropped)}))
    exchange({sites_of[i]: unmask for i in survivors}, "secagg_reveal",
             lambda i, m: server.receive_unmask(i, {"b": _arrays_bytes("b", m.arrays),
                                                    "s_sk": _arrays_bytes("s", m.arrays)}))
    total = server.result()  # raises SecureAggregationAborted below the threshold
    examples = float(total[-2])
    counts = {"updates": len(survivors), "examples": int(round(examples))}
    aggregated = len(survivors) >= plan.min_updates and examples > 0
    privacy = plan.privacy
    if aggregated and privacy is not None and privacy.mode == "coordinator":
        # clipped updates weigh 1 each (examples == survivors): noise the sum of changes before dividing
        total = total.copy()
        total[:-2] = privacy.coordinator_noise({"sum": total[:-2].astype(np.float32)}, coordinator._rng)["sum"]
    if aggregated:
        change = arrays_unflatten((total[:-2] / examples).astype(np.float32), coordinator.weights)
        coordinator.weights = plan.strategy.apply(coordinator.weights, change)
        coordinator.version += 1
        if coordinator.accountant is not None:
            coordinator.accountant.step(coordinator._round_noise_multiplier(len(survivors), n),
                                        n / len(backend.sites()))
    metric_sums = {"accuracy_before": float(total[-1])} if examples > 0 else {}
    in_bytes = audit.bytes("in", round=number)
    return coordinator._finish(number, participants, dropouts, counts, metric_sums, in_bytes, in_bytes, started,
                               wall, aggregated)
