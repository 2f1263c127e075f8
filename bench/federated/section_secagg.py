"""Section secagg: what secure aggregation costs a client in bytes, and whether FedAvg through it is FedAvg.

Overhead = bytes one client sends and receives over all four protocol phases
(advertise keys, share keys, masked input, unmask) / bytes of its update sent
once as plain float32 (4 bytes x vector length), averaged over the clients
that finish the round. Counted by `secure_sum` (`message_nbytes`: raw bytes,
4 bytes per client id, AES-GCM tags included, nonces and field names free).
The model download is left out of both sides.

Vectors: the digits linear model (64x10 + 10 = 650 values), the MLP
(64x64 + 64 + 64x10 + 10 = 4,810) and a text head on 384-d sentence
embeddings for 5 classes (384x5 + 5 = 1,925). Clients n = 10, 50, 100; with no
dropouts and with a third of them (n // 3, the most the default threshold
n - n // 3 survives) dropping out after sharing keys, before sending their
masked input: the costlier case, as survivors then reveal their key shares too.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.federated import data
from bench.federated.recipe import Context, spec_for
from learners.federated.local_training import local_train
from learners.federated.models import FederatedModel
from learners.federated.secure_aggregation import PHASES, secure_fedavg_change, secure_sum
from learners.federated.strategies import strategy_create

VECTORS = {"digits linear (650)": 650, "digits MLP (4,810)": 4810, "text head 384x5 (1,925)": 384 * 5 + 5}
SETTINGS = {"full": {"clients": [10, 50, 100], "equality_sites": 10},
            "quick": {"clients": [10], "equality_sites": 10}}
OVERHEAD_TARGET = 2.0


def overhead_row(length: int, n: int, dropped: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, length, n])
    vectors = {i: rng.normal(0.0, 0.05, length) for i in range(n)}
    started = time.perf_counter()
    result = secure_sum(vectors, drop_before_input=range(dropped))
    seconds = time.perf_counter() - started
    finishers = sorted(result.survivors)
    totals = [sum(result.bytes_per_client_by_phase[c].values()) for c in finishers]
    by_phase = {phase: float(np.mean([result.bytes_per_client_by_phase[c][phase] for c in finishers]))
                for phase in PHASES}
    expected = sum(vectors[c] for c in finishers)
    return {"length": length, "clients": n, "dropped": dropped, "plain_bytes": result.plain_bytes_per_client,
            "bytes_per_client": float(np.mean(totals)), "bytes_by_phase": by_phase,
            "overhead": float(np.mean(totals)) / result.plain_bytes_per_client,
            "overhead_max": float(np.max(totals)) / result.plain_bytes_per_client,
            "upload_overhead": float(np.mean([result.upload_bytes_per_client[c] for c in finishers]))
            / result.plain_bytes_per_client,
            "sum_max_abs_error": float(np.max(np.abs(result.sum - expected))), "seconds": seconds,
            "meets_target": float(np.mean(totals)) / result.plain_bytes_per_client <= OVERHEAD_TARGET}


def equality(kind: str, ctx: Context, sites: int) -> dict[str, Any]:
    """FedAvg of real site updates through secure aggregation against plain FedAvg (max abs difference)."""
    d = data.digits()
    recipe = ctx.recipes.get(kind)
    spec = spec_for(kind)
    parts = data.dirichlet_split(d.y_train, sites, seed=ctx.seeds[0])
    model = FederatedModel(spec)
    weights = spec.initial_weights(ctx.seeds[0])
    updates = [local_train(model, weights, d.X_train[p], d.y_train[p], recipe.training, seed=i)
               for i, p in enumerate(parts)]
    for i, update in enumerate(updates):
        update.site = f"s{i}"
    fedavg = strategy_create("fedavg")
    out = {}
    for label, dropped in (("no dropouts", 0), ("a third dropped", sites // 3)):
        secure, result = secure_fedavg_change(updates, weights, strategy=fedavg, drop_before_input=range(dropped))
        plain = fedavg.combine(updates[dropped:])
        scale = max(float(np.max(np.abs(v))) for v in plain.values())
        diff = max(float(np.max(np.abs(secure[k] - plain[k]))) for k in plain)
        out[label] = {"max_abs_diff": diff, "max_abs_change": scale, "survivors": len(result.survivors),
                      "overhead": result.overhead}
    return out


def run(ctx: Context) -> dict[str, Any]:
    settings = SETTINGS["quick" if ctx.quick else "full"]
    rows = []
    for name, length in VECTORS.items():
        for n in settings["clients"]:
            for dropped in (0, n // 3):
                row = {"vector": name, **overhead_row(length, n, dropped, ctx.seeds[0])}
                rows.append(row)
                ctx.log(f"  {name}, n={n}, {dropped} dropped: {row['overhead']:.2f}x plain")
    # the break-even: per-client bytes are about 4L (masked input) + c * n, so overhead <= 2 needs L >= c * n / 4
    fixed = [(r["bytes_per_client"] - r["plain_bytes"]) / r["clients"] for r in rows if r["dropped"] == 0]
    per_client_peer = float(np.median(fixed))
    equal = {kind: equality(kind, ctx, settings["equality_sites"]) for kind in ("linear", "mlp")}
    return {"settings": {**settings, "vectors": VECTORS, "overhead_target": OVERHEAD_TARGET}, "rows": rows,
            "bytes_per_peer": per_client_peer, "break_even_length_per_client": per_client_peer / 4,
            "fedavg_equality": equal,
            "target_met": {"everywhere": all(r["meets_target"] for r in rows),
                           "somewhere": any(r["meets_target"] for r in rows)}}
