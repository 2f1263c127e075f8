"""Section privacy: test accuracy against epsilon for DP-FedAvg with many sites.

100 Dirichlet(0.5) sites, 20 sampled per round (q = 0.2), R rounds of FedAvg on
the linear model. With `plan.privacy` each site's change is clipped to L2 norm
C and weighs 1 (DP-FedAvg, McMahan et al. 2018); the coordinator adds
N(0, (sigma C)^2) to the sum ("coordinator" mode, central DP with a trusted
coordinator). epsilon at delta = 1e-5 is `RoundResult.epsilon` after the last
round (Renyi-DP accountant, site-level: it covers everything one site sends).

Why coordinator mode: in "site" mode every site seeds its noise from the
round's seed, which the coordinator chose and sent in the message (see
README.md), so that noise is neither independent across sites nor hidden from
the coordinator; coordinator mode draws from the coordinator's own generator.

C is the median L2 norm of the changes the sites sent in the no-DP run of the
first seed (every round's updates, recorded as they leave the sites). Reading
C off the data is itself not private; a deployment would fix it in advance or
estimate it privately (Andrew et al. 2021's adaptive clipping).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from bench.federated import data
from bench.federated.recipe import Context, accuracies, federated_run, mean_sd
from learners.federated.privacy import DifferentialPrivacy
from learners.federated.site import Site
from learners.federated.updates import arrays_norm
from learners.federated.wire import arrays_from_wire, message_decode

SETTINGS = {"full": {"sites": 100, "sites_per_round": 20, "rounds": 100, "sigmas": [0.3, 0.5, 1.0, 2.0, 4.0]},
            "quick": {"sites": 20, "sites_per_round": 5, "rounds": 3, "sigmas": [1.0]}}
DELTA = 1e-5
MODE = "coordinator"


class NormRecordingSite(Site):
    """A site that notes the L2 norm of every change it sends (for choosing the clip norm)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norms: list[float] = []

    def handle(self, data: bytes) -> bytes:
        reply = super().handle(data)
        message = message_decode(reply)
        if message.kind == "update":
            self.norms.append(arrays_norm(arrays_from_wire(message.arrays, message.meta.get("compression") or {})))
        return reply


def run(ctx: Context) -> dict[str, Any]:
    settings = SETTINGS["quick" if ctx.quick else "full"]
    d = data.digits()
    recipe = ctx.recipes.get("linear")
    evaluate = data.evaluator(recipe.spec, d.X_test, d.y_test)
    splits = {seed: data.dirichlet_split(d.y_train, settings["sites"], seed=seed) for seed in ctx.seeds}
    common = {"spec": recipe.spec, "training": recipe.training, "strategy": "fedavg", "rounds": settings["rounds"],
              "evaluate": evaluate, "sites_per_round": settings["sites_per_round"]}
    finals, norms = [], []
    for seed in ctx.seeds:
        sites = data.sites_for(d.X_train, d.y_train, splits[seed], site_class=NormRecordingSite)
        finals.append(accuracies(federated_run(sites, seed=seed, **common))[-1])
        if not norms:
            norms = [x for site in sites.values() for x in site.norms]
    clip = float(np.median(norms))
    ctx.log(f"  no DP: {np.mean(finals):.3f}; clip norm C = median update norm {clip:.3f} "
            f"(quartiles {np.percentile(norms, 25):.3f}, {np.percentile(norms, 75):.3f})")
    rows: dict[str, Any] = {"no DP": {"sigma": None, "epsilon": None, "accuracy": mean_sd(finals),
                                      "per_seed": finals}}
    for sigma in settings["sigmas"]:
        privacy = DifferentialPrivacy(clip_norm=clip, noise_multiplier=sigma, delta=DELTA, mode=MODE)
        finals, epsilons, loose = [], [], False
        for seed in ctx.seeds:
            sites = data.sites_for(d.X_train, d.y_train, splits[seed])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                coordinator = federated_run(sites, seed=seed, privacy=privacy, **common)
            loose = loose or any("smallest alpha" in str(w.message) for w in caught)
            finals.append(accuracies(coordinator)[-1])
            epsilons.append(coordinator.results[-1].epsilon)
        rows[f"σ {sigma:g}"] = {"sigma": sigma, "epsilon": float(np.mean(epsilons)), "accuracy": mean_sd(finals),
                                    "per_seed": finals, "epsilon_bound_loose": loose}
        ctx.log(f"  sigma {sigma:g}: epsilon {np.mean(epsilons):.2f}, accuracy {np.mean(finals):.3f}")
    return {"settings": {**settings, "delta": DELTA, "mode": MODE, "model": "linear",
                         "sample_rate": settings["sites_per_round"] / settings["sites"]},
            "clip_norm": clip, "update_norm_quartiles": [float(np.percentile(norms, q)) for q in (25, 50, 75)],
            "rows": rows}
