"""Section fedavg: FedAvg, FedProx, FedAdam and FedAvgM on 10 non-IID sites against centralised training.

Each strategy runs R rounds with all 10 sites per round, per seed (the seed
draws the Dirichlet split, the initial weights and the batch order). The
references are the same local recipe run on all training rows pooled for R
rounds (`data.centralised_accuracy`) and scikit-learn's LogisticRegression
(C = 1, untuned). The target: reach 95% of the better of the two within R rounds.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bench.federated import data
from bench.federated.recipe import Context, accuracies, federated_run, first_reaching, mean_sd

SETTINGS = {"full": {"rounds": 50, "sites": 10, "kinds": ["linear", "mlp"]},
            "quick": {"rounds": 5, "sites": 10, "kinds": ["linear"]}}
STRATEGIES = ["fedavg", "fedprox", "fedadam", "fedavgm"]
TARGET_FRACTION = 0.95
ALSO_FRACTION = 0.99


def run(ctx: Context) -> dict[str, Any]:
    settings = SETTINGS["quick" if ctx.quick else "full"]
    d = data.digits()
    out: dict[str, Any] = {"settings": {**settings, "strategies": STRATEGIES, "target_fraction": TARGET_FRACTION,
                                        "also_fraction": ALSO_FRACTION, "alpha": data.ALPHA},
                           "logistic_regression_accuracy": data.logistic_regression_accuracy(), "models": {}}
    splits = {seed: data.dirichlet_split(d.y_train, settings["sites"], seed=seed) for seed in ctx.seeds}
    out["split"] = data.split_summary(splits[ctx.seeds[0]], d.y_train)
    for kind in settings["kinds"]:
        recipe = ctx.recipes.get(kind)
        centralised = ctx.recipes.centralised(kind)
        target = ctx.recipes.target(kind, TARGET_FRACTION)
        also = ctx.recipes.target(kind, ALSO_FRACTION)
        evaluate = data.evaluator(recipe.spec, d.X_test, d.y_test)
        model: dict[str, Any] = {"centralised_accuracy": mean_sd(centralised), "centralised_per_seed": centralised,
                                 "target_accuracy": target, "also_accuracy": also, "strategies": {}}
        for strategy in STRATEGIES:
            curves = []
            for seed in ctx.seeds:
                sites = data.sites_for(d.X_train, d.y_train, splits[seed])
                coordinator = federated_run(sites, spec=recipe.spec, training=recipe.training, strategy=strategy,
                                            params=recipe.server[strategy], rounds=settings["rounds"],
                                            evaluate=evaluate, seed=seed)
                curves.append(accuracies(coordinator))
            to_target = [first_reaching(curve, target) for curve in curves]
            to_also = [first_reaching(curve, also) for curve in curves]
            model["strategies"][strategy] = {
                "params": recipe.server[strategy], "final_accuracy": mean_sd([c[-1] for c in curves]),
                "rounds_to_target": to_target, "rounds_to_also": to_also,
                "rounds_to_target_mean": mean_sd(to_target)["mean"], "curves": curves,
                "target_met": all(r is not None for r in to_target),
            }
            ctx.log(f"  {kind} {strategy}: {np.mean([c[-1] for c in curves]):.3f} after {settings['rounds']} rounds "
                    f"(centralised {np.mean(centralised):.3f}); rounds to {TARGET_FRACTION:.0%}: {to_target}")
        out["models"][kind] = model
    return out
