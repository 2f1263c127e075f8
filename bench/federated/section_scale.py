"""Section scale: the in-process backend at 100, 1,000 and 10,000 clients per round.

Each size runs in a fresh child process (`python -m bench.federated.section_scale`),
so its memory is its own: the resident set right before the first round (after
imports, data and the coordinator are made) and its peak during the rounds (the
kernel's VmHWM, reset just before the first round), plus, in a separate child,
tracemalloc's peak of Python allocations during one round. Every client is made on demand by the backend's
`site_factory` and holds 10-20 rows drawn from the digits training rows with
a Dirichlet(0.5) label mix; FedAvg (streaming) on the linear model, every client
in every round.

Two audits: the product's `PayloadAudit`, which keeps a record (header included)
of every message that crossed, and a counting audit (this benchmark's) that
keeps only the byte totals the coordinator reads, to separate the runtime's own
memory from the audit trail's.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SETTINGS = {"full": {"clients": [100, 1000, 10000], "rounds": 3, "epochs": 1},
            "quick": {"clients": [100, 1000], "rounds": 1, "epochs": 1}}
ROWS = (10, 20)
WORK = Path(__file__).resolve().parent / "work"


def client_factory(seed: int):
    from bench.federated import data
    from learners.federated.site import Site

    d = data.digits()
    by_class = [np.flatnonzero(d.y_train == label) for label in range(len(data.CLASSES))]

    def make(name: str) -> Site:
        rng = np.random.default_rng([seed, int(name[1:])])
        n = int(rng.integers(ROWS[0], ROWS[1] + 1))
        labels = rng.choice(len(by_class), size=n, p=rng.dirichlet([data.ALPHA] * len(by_class)))
        index = np.array([rng.choice(by_class[label]) for label in labels])
        return Site(name, rows=lambda: (d.X_train[index], d.y_train[index]), classes=data.CLASSES)

    return make


def counting_audit():
    from learners.federated.wire import PayloadAudit

    class CountingAudit(PayloadAudit):
        """Byte totals per (direction, round) only: what `Coordinator` reads back from its audit."""

        def __init__(self) -> None:
            super().__init__()
            self.totals: dict[tuple[str, int | None], int] = {}
            self.messages = 0

        def record(self, direction, site, data, *, round=None):
            self.totals[(direction, round)] = self.totals.get((direction, round), 0) + len(data)
            self.messages += 1

        def bytes(self, direction, *, round=None, sites=None):
            if sites is not None:
                raise NotImplementedError("the counting audit keeps no per-site totals")
            return sum(v for (d, r), v in self.totals.items() if d == direction and (round is None or r == round))

    return CountingAudit()


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss_reset_peak() -> int:
    """Current RSS (KiB), after resetting the kernel's peak-RSS mark (VmHWM) to it.

    Resetting makes the peak read after the rounds the peak *during* them: without it, a transient
    peak while importing torch and scikit-learn would hide any growth smaller than itself.
    """
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS")


def rss_peak() -> int:
    """Peak RSS (KiB) since `rss_reset_peak`."""
    return _status_kib("VmHWM")


def child(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--audit", choices=["default", "counting"], required=True)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from bench.federated import data
    from bench.federated.recipe import BATCH_SIZE, spec_for
    from learners.federated.backends.inprocess import InProcessBackend
    from learners.federated.coordinator import Coordinator, FederationPlan
    from learners.federated.local_training import LocalTraining
    from learners.federated.strategies import strategy_create

    d = data.digits()
    spec = spec_for("linear")
    names = [f"c{i}" for i in range(args.clients)]
    plan = FederationPlan(strategy=strategy_create("fedavg"), model=spec, rounds=args.rounds,
                          training=LocalTraining(lr=args.lr, epochs=args.epochs, batch_size=BATCH_SIZE),
                          classes_digest=data.DIGEST, seed=args.seed)
    audit = counting_audit() if args.audit == "counting" else None
    coordinator = Coordinator(InProcessBackend(site_names=names, site_factory=client_factory(args.seed),
                                               seed=args.seed),
                              plan, audit=audit, evaluate=data.evaluator(spec, d.X_test, d.y_test))
    before = rss_reset_peak()
    if args.tracemalloc:
        import tracemalloc

        tracemalloc.start()
    walls = []
    for _ in range(args.rounds):
        started = time.perf_counter()
        result = coordinator.round()
        walls.append(time.perf_counter() - started)
    traced = None
    if args.tracemalloc:
        traced = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    out = {"clients": args.clients, "audit": args.audit, "round_seconds": walls,
           "rss_before_kib": before, "rss_peak_kib": rss_peak(),
           "process_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
           "tracemalloc_peak_bytes": traced, "updates_last_round": result.updates,
           "bytes_in_last_round": result.bytes_in, "accuracy_last_round": result.evaluation["accuracy"],
           "audit_records": len(coordinator.audit.records) if args.audit == "default" else None,
           "audit_messages": getattr(coordinator.audit, "messages", None)}
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def run(ctx) -> dict[str, Any]:
    from bench.harness import run_child

    settings = SETTINGS["quick" if ctx.quick else "full"]
    recipe = ctx.recipes.get("linear")
    WORK.mkdir(parents=True, exist_ok=True)
    log_file = WORK / "scale.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    # the tuned step size; one local epoch whatever the recipe says, as this section times the runtime, not learning
    common = ["--lr", str(recipe.training.lr), "--epochs", str(settings["epochs"]), "--seed", str(ctx.seeds[0])]
    variants = [("default", False, settings["rounds"]), ("counting", False, settings["rounds"])]
    if not ctx.quick:
        variants.append(("counting", True, 1))
    rows = []
    for clients in settings["clients"]:
        row: dict[str, Any] = {"clients": clients}
        for audit, traced, rounds in variants:
            args = [sys.executable, "-m", "bench.federated.section_scale", "--clients", str(clients),
                    "--rounds", str(rounds), "--audit", audit, *common, *(["--tracemalloc"] if traced else [])]
            result, seconds, maxrss = run_child(args, env, log_file, f"scale {clients} clients, {audit} audit")
            key = "tracemalloc" if traced else audit
            row[key] = {**result, "child_seconds": seconds, "wait4_maxrss_kib": maxrss,
                        "rss_increase_kib": result["rss_peak_kib"] - result["rss_before_kib"]}
            ctx.log(f"  {clients} clients, {key}: {np.median(result['round_seconds']):.2f} s per round, peak RSS "
                    f"{result['rss_peak_kib'] / 1024:.0f} MiB (+{row[key]['rss_increase_kib'] / 1024:.1f} MiB over "
                    f"the rounds)" + (f", Python peak {result['tracemalloc_peak_bytes'] / 2**20:.1f} MiB"
                                      if traced else ""))
        rows.append(row)
    return {"settings": {**settings, "rows_per_client": list(ROWS), "model": "linear", "strategy": "fedavg"},
            "rows": rows}


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(child(sys.argv[1:]))
