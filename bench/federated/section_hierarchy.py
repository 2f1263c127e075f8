"""Section hierarchy: what reaches the coordinator per aggregation, flat against regions, with and without int8.

100 Dirichlet(0.5) sites, all in every round, R rounds of FedAvg. Regions are
consecutive blocks of sites (s0-s9 in the first of 10, and so on). Ingress is
`RoundResult.bytes_in`, the bytes of the messages that reached the coordinator
itself (site updates when flat, one combined update per region otherwise),
wire header included. With compression "int8", sites and regions both send
8-bit codes (`learners.federated.compression`, stochastic rounding).

Also measured: int8's error on real updates (`compression_error`), the
changes 100 sites make to the initial weights and to the weights after R flat rounds.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bench.federated import data
from bench.federated.recipe import Context, accuracies, federated_run, mean_sd
from learners.federated.compression import compression_error
from learners.federated.hierarchy import Region
from learners.federated.local_training import local_train
from learners.federated.models import FederatedModel

SETTINGS = {"full": {"sites": 100, "rounds": 30}, "quick": {"sites": 20, "rounds": 3}}
CONFIGS = {  # name -> (regions, compression)
    "flat": (None, "none"),
    "flat + int8": (None, "int8"),
    "5 regions": (5, "none"),
    "10 regions": (10, "none"),
    "5 regions + int8": (5, "int8"),
    "10 regions + int8": (10, "int8"),
}
QUICK_CONFIGS = ["flat", "10 regions", "10 regions + int8"]
REDUCTION_TARGET = 0.75
ACCURACY_TOLERANCE = 0.01  # int8 "does not wreck accuracy": within 1 point of flat on the mean over seeds


def regions_of(names: list[str], count: int) -> list[Region]:
    blocks = np.array_split(np.arange(len(names)), count)
    return [Region(f"r{i}", tuple(names[j] for j in block)) for i, block in enumerate(blocks)]


def error_of_updates(ctx: Context, sites_parts: list[np.ndarray], weights: dict) -> dict[str, float]:
    """int8 error of the changes every site makes from `weights`, deterministic and stochastic rounding."""
    d = data.digits()
    recipe = ctx.recipes.get("linear")
    model = FederatedModel(recipe.spec)
    rng = np.random.default_rng(5)
    rows: dict[str, list[float]] = {"relative_l2": [], "max_abs": [], "relative_l2_stochastic": [],
                                    "max_abs_stochastic": [], "byte_ratio": [], "max_abs_value": []}
    for i, part in enumerate(sites_parts):
        change = local_train(model, weights, d.X_train[part], d.y_train[part], recipe.training, seed=i).arrays
        plain, stochastic = compression_error(change), compression_error(change, stochastic=True, rng=rng)
        rows["relative_l2"].append(plain["relative_l2"])
        rows["max_abs"].append(plain["max_abs"])
        rows["relative_l2_stochastic"].append(stochastic["relative_l2"])
        rows["max_abs_stochastic"].append(stochastic["max_abs"])
        rows["byte_ratio"].append(plain["byte_ratio"])
        rows["max_abs_value"].append(max(float(np.max(np.abs(v))) for v in change.values()))
    return {f"{key}_{stat}": float(fn(values)) for key, values in rows.items()
            for stat, fn in (("mean", np.mean), ("max", np.max))}


def run(ctx: Context) -> dict[str, Any]:
    settings = SETTINGS["quick" if ctx.quick else "full"]
    names = QUICK_CONFIGS if ctx.quick else list(CONFIGS)
    d = data.digits()
    recipe = ctx.recipes.get("linear")
    evaluate = data.evaluator(recipe.spec, d.X_test, d.y_test)
    out: dict[str, Any] = {"settings": {**settings, "model": "linear", "reduction_target": REDUCTION_TARGET,
                                        "accuracy_tolerance": ACCURACY_TOLERANCE,
                                        "parameters": int(sum(np.size(v) for v in recipe.spec.initial_weights(0)
                                                              .values()))},
                           "configs": {}}
    trained_weights, first_parts = None, None
    for name in names:
        count, compression = CONFIGS[name]
        finals, ingress, site_ingress, egress = [], [], [], []
        for seed in ctx.seeds:
            parts = data.dirichlet_split(d.y_train, settings["sites"], seed=seed)
            sites = data.sites_for(d.X_train, d.y_train, parts)
            regions = regions_of(list(sites), count) if count else None
            coordinator = federated_run(sites, spec=recipe.spec, training=recipe.training, strategy="fedavg",
                                        rounds=settings["rounds"], evaluate=evaluate, seed=seed, regions=regions,
                                        compression=compression)
            finals.append(accuracies(coordinator)[-1])
            ingress.append(float(np.mean([r.bytes_in for r in coordinator.results])))
            site_ingress.append(float(np.mean([r.site_bytes_in for r in coordinator.results])))
            egress.append(float(np.mean([r.bytes_out for r in coordinator.results])))
            if name == "flat" and trained_weights is None:
                trained_weights, first_parts = coordinator.weights, parts
        out["configs"][name] = {"regions": count, "compression": compression, "final_accuracy": mean_sd(finals),
                                "final_per_seed": finals, "bytes_in_per_aggregation": float(np.mean(ingress)),
                                "site_bytes_in_per_aggregation": float(np.mean(site_ingress)),
                                "bytes_out_per_aggregation": float(np.mean(egress))}
        ctx.log(f"  {name}: {np.mean(ingress) / 1024:.1f} KiB into the coordinator per aggregation, "
                f"accuracy {np.mean(finals):.3f}")
    flat = out["configs"]["flat"]
    for config in out["configs"].values():
        config["reduction_vs_flat"] = 1.0 - config["bytes_in_per_aggregation"] / flat["bytes_in_per_aggregation"]
        config["accuracy_change_vs_flat"] = config["final_accuracy"]["mean"] - flat["final_accuracy"]["mean"]
    out["compression_error"] = {
        "initial_weights": error_of_updates(ctx, first_parts, recipe.spec.initial_weights(ctx.seeds[0])),
        f"after_{settings['rounds']}_rounds": error_of_updates(ctx, first_parts, trained_weights),
    }
    regional = [c for c in out["configs"].values() if c["regions"]]
    out["target_met"] = {
        "reduction": any(c["reduction_vs_flat"] >= REDUCTION_TARGET for c in regional),
        "accuracy": all(c["accuracy_change_vs_flat"] >= -ACCURACY_TOLERANCE for c in out["configs"].values()),
    }
    return out
