"""The local training recipe and server hyper-parameters, chosen on validation rows; and how every run is made.

Nothing here looks at the test set. For each model kind, on the validation
split (`data.validation_split`) with 10 Dirichlet(0.5) sites and seed 0:

1. FedAvg scores each local recipe (SGD step size x local epochs, batch 32) by
   its validation accuracy averaged over the last 5 of R rounds, and keeps the
   cheapest (fewest epochs, then smallest step) within one standard error of
   the best (sqrt(p(1-p)/n) over the n validation rows): the one-standard-error
   rule, since the top recipes differ by a few validation rows;
2. with that recipe, each server rule picks its one parameter the same way
   (FedProx's mu, FedAdam's eta, FedAvgM's server step at momentum 0.9).

Every section then uses the recipe chosen here for the model it trains.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from bench.federated import data
from learners.federated.backends.inprocess import InProcessBackend
from learners.federated.coordinator import Coordinator, FederationPlan
from learners.federated.local_training import LocalTraining
from learners.federated.models import ModelSpec
from learners.federated.site import Site
from learners.federated.strategies import strategy_create

BATCH_SIZE = 32
HIDDEN = 64
# A first pass over lr {0.1, 0.3, 1} x epochs {1, 2}, mu {0.01, 0.1, 1} and FedAvgM steps {0.03, 0.1, 0.3}
# chose edge values on validation rows; the grids below are those widened towards the side that won.
LOCAL_GRID = [{"lr": lr, "epochs": epochs} for lr in (0.3, 1.0, 3.0) for epochs in (1, 2, 5)]
SERVER_GRID: dict[str, list[dict[str, float]]] = {
    "fedavg": [{}],
    "fedprox": [{"proximal_mu": mu} for mu in (0.001, 0.01, 0.1)],
    "fedadam": [{"eta": eta} for eta in (0.01, 0.03, 0.1, 0.3)],
    "fedavgm": [{"server_lr": lr, "momentum": 0.9} for lr in (0.1, 0.3, 1.0)],
}
TUNING_SITES = 10
SCORE_LAST = 5  # validation accuracy averaged over the last rounds: one round's number is noisy


def spec_for(kind: str) -> ModelSpec:
    return ModelSpec(kind, data.digits().n_features, len(data.CLASSES), hidden=HIDDEN)


def federated_run(sites: dict[str, Site], *, spec: ModelSpec, training: LocalTraining, strategy: str,
                  params: dict[str, Any] | None = None, rounds: int, evaluate: Callable | None, seed: int,
                  backend: dict[str, Any] | None = None, **plan_fields: Any) -> Coordinator:
    """A coordinator over an in-process backend, after `rounds` synchronous rounds (0 runs none)."""
    plan = FederationPlan(strategy=strategy_create(strategy, **(params or {})), model=spec, training=training,
                          rounds=rounds, classes_digest=data.DIGEST, seed=seed, **plan_fields)
    coordinator = Coordinator(InProcessBackend(sites, seed=seed, **(backend or {})), plan, evaluate=evaluate)
    if rounds:
        coordinator.run()
    return coordinator


def accuracies(coordinator: Coordinator) -> list[float]:
    return [round(float(r.evaluation["accuracy"]), 5) for r in coordinator.results]


@dataclass
class Recipe:
    kind: str
    training: LocalTraining
    server: dict[str, dict[str, float]]
    tuning: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> ModelSpec:
        return spec_for(self.kind)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "training": dict(self.training.__dict__), "server": self.server,
                "tuning": self.tuning}


def _validation_score(kind: str, training: LocalTraining, strategy: str, params: dict, rounds: int) -> float:
    val = data.validation_split()
    parts = data.dirichlet_split(val.y_train, TUNING_SITES, seed=0)
    sites = data.sites_for(val.X_train, val.y_train, parts)
    spec = spec_for(kind)
    coordinator = federated_run(sites, spec=spec, training=training, strategy=strategy, params=params,
                                rounds=rounds, evaluate=data.evaluator(spec, val.X_test, val.y_test), seed=0)
    return float(np.mean(accuracies(coordinator)[-SCORE_LAST:]))


def tune(kind: str, *, rounds: int, quick: bool, log: Callable[[str], None]) -> Recipe:
    """The recipe for `kind`, chosen on validation rows (see the module docstring)."""
    local_grid = LOCAL_GRID[1:2] if quick else LOCAL_GRID
    server_grid = {name: grid[:1] for name, grid in SERVER_GRID.items()} if quick else SERVER_GRID
    local_scores = []
    for setting in local_grid:
        training = LocalTraining(batch_size=BATCH_SIZE, **setting)
        local_scores.append({**setting, "validation_accuracy": _validation_score(kind, training, "fedavg", {},
                                                                                  rounds)})
    top = max(s["validation_accuracy"] for s in local_scores)
    standard_error = float(np.sqrt(top * (1 - top) / len(data.validation_split().y_test)))
    close = [s for s in local_scores if s["validation_accuracy"] >= top - standard_error]
    best = min(close, key=lambda s: (s["epochs"], s["lr"]))
    training = LocalTraining(batch_size=BATCH_SIZE, lr=best["lr"], epochs=best["epochs"])
    server, server_scores = {}, {}
    for name, grid in server_grid.items():
        scores = [{**params, "validation_accuracy": _validation_score(kind, training, name, params, rounds)}
                  for params in grid]
        server_scores[name] = scores
        server[name] = dict(grid[int(np.argmax([s["validation_accuracy"] for s in scores]))])
    log(f"  recipe for {kind}: lr {training.lr}, {training.epochs} epoch(s), batch {BATCH_SIZE}; server {server}")
    return Recipe(kind, training, server, tuning={"rounds": rounds, "sites": TUNING_SITES, "local": local_scores,
                                                   "best_local": top, "standard_error": standard_error,
                                                   "server": server_scores})


class Recipes:
    """Tunes each model kind once per benchmark run, on first use, and keeps the centralised references."""

    def __init__(self, *, rounds: int, seeds: list[int], quick: bool, log: Callable[[str], None]) -> None:
        self.rounds, self.seeds, self.quick, self.log = rounds, seeds, quick, log
        self._recipes: dict[str, Recipe] = {}
        self._centralised: dict[str, list[float]] = {}

    def get(self, kind: str) -> Recipe:
        if kind not in self._recipes:
            self.log(f"tuning the {kind} recipe on validation rows")
            self._recipes[kind] = tune(kind, rounds=self.rounds, quick=self.quick, log=self.log)
        return self._recipes[kind]

    def centralised(self, kind: str) -> list[float]:
        """Test accuracy, per seed, of the recipe run on all training rows pooled for as many rounds."""
        if kind not in self._centralised:
            recipe = self.get(kind)
            self._centralised[kind] = [
                round(data.centralised_accuracy(recipe.spec, recipe.training, data.digits(), rounds=self.rounds,
                                                seed=seed), 5) for seed in self.seeds]
        return self._centralised[kind]

    def target(self, kind: str, fraction: float) -> float:
        """`fraction` of the better centralised reference: the recipe on pooled rows, or LogisticRegression."""
        return fraction * max(float(np.mean(self.centralised(kind))), data.logistic_regression_accuracy())

    def as_dict(self) -> dict[str, Any]:
        return {kind: {**recipe.as_dict(), "centralised_accuracy": self._centralised.get(kind)}
                for kind, recipe in self._recipes.items()}


@dataclass
class Context:
    """What every section gets: mode, seeds, logging and the shared recipes."""

    quick: bool
    seeds: list[int]
    log: Callable[[str], None]
    recipes: Recipes


def mean_sd(values: list[float]) -> dict[str, float]:
    array = np.asarray([v for v in values if v is not None], dtype=float)
    if array.size == 0:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(array.mean()), "sd": float(array.std(ddof=1)) if array.size > 1 else 0.0,
            "n": int(array.size)}


def first_reaching(values: list[float], target: float) -> int | None:
    """1-based index of the first value >= target, or None."""
    for index, value in enumerate(values, start=1):
        if value >= target:
            return index
    return None
