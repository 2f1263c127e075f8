"""Section robust: 20% malicious sites against FedAvg and the Byzantine-robust rules.

An attacker is a real site (it has its Dirichlet share of rows and trains on
them) whose `handle` replaces the change in its reply with a poisoned one
before sending, through `learners.federated.wire` like any site:

* sign_flip: -10 x its honest change (a scaled sign-flip, as in Fang et al. 2020);
* gaussian: N(0, 1) per coordinate, unrelated to its data (Blanchard et al.'s
  Gaussian Byzantine worker), about 25 in L2 norm for the 650-value linear model.

Attackers report their true example count (FedAvg weights by it; the robust
rules ignore it). They are drawn at random per seed. "none" is the same
federation with every site honest. Rules: FedAvg, coordinate median, trimmed
mean (beta = 0.2), Krum with f = the number of attackers, and Multi-Krum
(f, m = n - f) as an extra.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bench.federated import data
from bench.federated.recipe import Context, accuracies, federated_run, mean_sd
from learners.federated.site import Site
from learners.federated.updates import arrays_norm
from learners.federated.wire import Message, arrays_from_wire, arrays_to_wire, message_decode, message_encode

SETTINGS = {"full": {"setups": [[10, 2], [20, 4]], "rounds": 30},
            "quick": {"setups": [[10, 2]], "rounds": 3}}
ATTACKS = ["none", "sign_flip", "gaussian"]
SIGN_FLIP_SCALE = -10.0
GAUSSIAN_STD = 1.0
TRIM_FRACTION = 0.2


class PoisoningSite(Site):
    """A site that trains honestly, then sends a poisoned change in a well-formed update message."""

    def __init__(self, name: str, rows, classes=None, *, attack: str, seed: int) -> None:
        super().__init__(name, rows, classes)
        self.attack = attack
        self._rng = np.random.default_rng([seed, int(name[1:])])
        self.honest_norms: list[float] = []

    def handle(self, data: bytes) -> bytes:
        reply = super().handle(data)
        message = message_decode(reply)
        if message.kind != "update":
            return reply
        compression = message.meta.get("compression") or {"name": "none"}
        honest = arrays_from_wire(message.arrays, compression)
        self.honest_norms.append(arrays_norm(honest))
        if self.attack == "sign_flip":
            poisoned = {name: (SIGN_FLIP_SCALE * value).astype(np.float32) for name, value in honest.items()}
        elif self.attack == "gaussian":
            poisoned = {name: self._rng.normal(0.0, GAUSSIAN_STD, value.shape).astype(np.float32)
                        for name, value in honest.items()}
        else:
            raise ValueError(f"unknown attack {self.attack!r}; known: {ATTACKS[1:]}")
        arrays, wire_compression = arrays_to_wire(compression["name"], poisoned, self._rng)
        return message_encode(Message(kind="update", meta={**message.meta, "compression": wire_compression},
                                      arrays=arrays))


def rules(attackers: int) -> dict[str, tuple[str, dict]]:
    return {"fedavg": ("fedavg", {}), "median": ("median", {}),
            f"trimmed_mean (beta={TRIM_FRACTION})": ("trimmed_mean", {"trim_fraction": TRIM_FRACTION}),
            f"krum (f={attackers})": ("krum", {"num_byzantine": attackers}),
            f"multi-krum (f={attackers}, m={{m}})": ("krum", {"num_byzantine": attackers, "multi": -1})}


def run(ctx: Context) -> dict[str, Any]:
    settings = SETTINGS["quick" if ctx.quick else "full"]
    d = data.digits()
    recipe = ctx.recipes.get("linear")
    evaluate = data.evaluator(recipe.spec, d.X_test, d.y_test)
    out: dict[str, Any] = {"settings": {**settings, "attacks": ATTACKS, "sign_flip_scale": SIGN_FLIP_SCALE,
                                        "gaussian_std": GAUSSIAN_STD, "model": "linear"}, "setups": {}}
    for n_sites, n_attackers in settings["setups"]:
        table: dict[str, Any] = {}
        honest_norms: list[float] = []
        for label, (strategy, params) in rules(n_attackers).items():
            if params.get("multi") == -1:
                params = {**params, "multi": n_sites - n_attackers}
                label = label.format(m=n_sites - n_attackers)
            row: dict[str, Any] = {"strategy": strategy, "params": params}
            for attack in ATTACKS:
                finals = []
                for seed in ctx.seeds:
                    parts = data.dirichlet_split(d.y_train, n_sites, seed=seed)
                    sites = data.sites_for(d.X_train, d.y_train, parts)
                    attackers = np.random.default_rng([seed, 31]).choice(n_sites, size=n_attackers, replace=False)
                    if attack != "none":
                        for i in attackers:
                            name = f"s{i}"
                            sites[name] = PoisoningSite(name, rows=(lambda p=parts[i]: (d.X_train[p], d.y_train[p])),
                                                        classes=data.CLASSES, attack=attack, seed=seed)
                    coordinator = federated_run(sites, spec=recipe.spec, training=recipe.training,
                                                strategy=strategy, params=params, rounds=settings["rounds"],
                                                evaluate=evaluate, seed=seed)
                    finals.append(accuracies(coordinator)[-1])
                    honest_norms += [x for s in sites.values() if isinstance(s, PoisoningSite)
                                     for x in s.honest_norms]
                row[attack] = {**mean_sd(finals), "per_seed": finals}
            table[label] = row
            ctx.log(f"  {n_sites} sites, {n_attackers} attackers, {label}: "
                    + ", ".join(f"{a} {row[a]['mean']:.3f}" for a in ATTACKS))
        out["setups"][f"{n_attackers} of {n_sites}"] = {
            "sites": n_sites, "attackers": n_attackers, "rules": table,
            "honest_update_norm_median": float(np.median(honest_norms)) if honest_norms else None,
            "gaussian_attack_norm": GAUSSIAN_STD * float(np.sqrt(sum(np.size(v) for v in
                                                                     recipe.spec.initial_weights(0).values()))),
        }
    return out
