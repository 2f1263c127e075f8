"""Section async: synchronous FedAvg against FedBuff (`Coordinator.run_async`) with stragglers, in simulated time.

Latency model (simulated seconds from sending the weights to the reply):
each site has a base time, 1 s, or 10 s for a straggler (25% of sites, drawn
at random per seed, independently of their data); every request takes
base x LogNormal(0, 0.5), a heavy right tail on top of the 10x split.

Fair comparison: every site trains concurrently in all three runs (100 sites,
concurrency 100; `run_async` keeps the first `concurrency` sites busy, so
anything less would leave the same sites out for the whole run), and each run
gets the same number of local trainings (sync: R rounds x 100 sites; FedBuff:
R x 100 / K aggregations of K updates). Runs:

* sync: FedAvg rounds that wait for all 100 replies (the baseline FedBuff compares to);
* sync with deadline: rounds that stop waiting after 3 s (the fast sites'
  98.6th percentile), dropping the stragglers' updates every round;
* FedBuff: K = 10, server step 1, staleness weight (1 + tau)^-0.5.

The target is section fedavg's: 95% of the better centralised reference for
the linear model (the recipe on pooled rows, or LogisticRegression); time to target is the simulated finish time of the first
aggregation whose model reaches it.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bench.federated import data
from bench.federated.recipe import Context, mean_sd
from learners.federated.backends.inprocess import InProcessBackend
from learners.federated.coordinator import Coordinator, FederationPlan
from learners.federated.strategies import strategy_create

SETTINGS = {
    "full": {"sites": 100, "sync_rounds": 100, "buffer_size": 10, "straggler_fraction": 0.25, "straggler_factor": 10.0,
             "base_seconds": 1.0, "latency_sigma": 0.5, "deadline_seconds": 3.0, "staleness_exponent": 0.5,
             "server_lr": 1.0},
    "quick": {"sites": 20, "sync_rounds": 10, "buffer_size": 5, "straggler_fraction": 0.25, "straggler_factor": 10.0,
              "base_seconds": 1.0, "latency_sigma": 0.5, "deadline_seconds": 3.0, "staleness_exponent": 0.5,
              "server_lr": 1.0},
}
TARGET_FRACTION = 0.95
SPEEDUP_TARGET = 3.0
RUNS = ["sync", "sync_deadline", "fedbuff"]


def latency_model(names: list[str], settings: dict, seed: int):
    rng = np.random.default_rng([seed, 23])
    stragglers = set(rng.choice(len(names), size=int(round(settings["straggler_fraction"] * len(names))),
                                replace=False).tolist())
    base = {name: settings["base_seconds"] * (settings["straggler_factor"] if i in stragglers else 1.0)
            for i, name in enumerate(names)}
    sigma = settings["latency_sigma"]
    return (lambda site, generator: base[site] * float(generator.lognormal(0.0, sigma))), sorted(stragglers)


def one_run(kind: str, ctx: Context, settings: dict, seed: int, target: float) -> dict[str, Any]:
    d = data.digits()
    recipe = ctx.recipes.get("linear")
    parts = data.dirichlet_split(d.y_train, settings["sites"], seed=seed)
    sites = data.sites_for(d.X_train, d.y_train, parts)
    latency, stragglers = latency_model(list(sites), settings, seed)
    timeout = settings["deadline_seconds"] if kind == "sync_deadline" else 1e9
    plan = FederationPlan(strategy=strategy_create("fedavg"), model=recipe.spec, training=recipe.training,
                          rounds=settings["sync_rounds"], timeout=timeout, classes_digest=data.DIGEST, seed=seed)
    coordinator = Coordinator(InProcessBackend(sites, latency=latency, seed=seed), plan,
                              evaluate=data.evaluator(recipe.spec, d.X_test, d.y_test))
    if kind == "fedbuff":
        aggregations = settings["sync_rounds"] * settings["sites"] // settings["buffer_size"]
        results = coordinator.run_async(buffer_size=settings["buffer_size"], aggregations=aggregations,
                                        server_lr=settings["server_lr"],
                                        staleness_exponent=settings["staleness_exponent"])
    else:
        results = coordinator.run()
    times = [float(r.finished_at) for r in results]
    accuracy = [float(r.evaluation["accuracy"]) for r in results]
    reached = next((i for i, a in enumerate(accuracy) if a >= target), None)
    stale_share = None
    if kind == "fedbuff":
        straggler_names = {f"s{i}" for i in stragglers}
        seen = [site for r in results for site in r.participants]
        stale_share = sum(site in straggler_names for site in seen) / max(len(seen), 1)
    # a thinned curve for the report: (simulated seconds, accuracy) at most 60 points
    step = max(1, len(results) // 60)
    return {"time_to_target": times[reached] if reached is not None else None,
            "aggregations_to_target": reached + 1 if reached is not None else None,
            "final_accuracy": accuracy[-1], "final_time": times[-1], "aggregations": len(results),
            "local_trainings": int(sum(r.updates for r in results)),
            "dropped_updates": int(sum(len(r.dropouts) for r in results)),
            "straggler_share_of_updates": stale_share,
            "curve": [[round(times[i], 2), round(accuracy[i], 4)] for i in range(0, len(results), step)]}


def run(ctx: Context) -> dict[str, Any]:
    settings = SETTINGS["quick" if ctx.quick else "full"]
    target = ctx.recipes.target("linear", TARGET_FRACTION)
    out: dict[str, Any] = {"settings": {**settings, "target_fraction": TARGET_FRACTION, "model": "linear",
                                        "speedup_target": SPEEDUP_TARGET},
                           "target_accuracy": target, "runs": {kind: {"per_seed": []} for kind in RUNS}}
    for seed in ctx.seeds:
        for kind in RUNS:
            result = one_run(kind, ctx, settings, seed, target)
            out["runs"][kind]["per_seed"].append(result)
            ctx.log(f"  seed {seed} {kind}: target at {result['time_to_target']} s, final "
                    f"{result['final_accuracy']:.3f} at {result['final_time']:.0f} s")
    for kind in RUNS:
        per_seed = out["runs"][kind]["per_seed"]
        out["runs"][kind].update({
            "time_to_target": mean_sd([r["time_to_target"] for r in per_seed]),
            "final_accuracy": mean_sd([r["final_accuracy"] for r in per_seed]),
            "final_time": mean_sd([r["final_time"] for r in per_seed]),
            "reached": sum(r["time_to_target"] is not None for r in per_seed),
        })
    speedups = {}
    for baseline in ("sync", "sync_deadline"):
        ratios = [b["time_to_target"] / a["time_to_target"]
                  for a, b in zip(out["runs"]["fedbuff"]["per_seed"], out["runs"][baseline]["per_seed"])
                  if a["time_to_target"] and b["time_to_target"]]
        speedups[baseline] = {**mean_sd(ratios), "per_seed": ratios, "min": min(ratios) if ratios else None}
    out["speedup"] = speedups
    everyone = len(ctx.seeds)
    out["target_met"] = (out["runs"]["fedbuff"]["reached"] == everyone and out["runs"]["sync"]["reached"] == everyone
                         and speedups["sync"]["min"] is not None and speedups["sync"]["min"] >= SPEEDUP_TARGET)
    return out
