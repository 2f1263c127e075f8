"""Pool-based active learning with an oracle: the simulated labelling loop, one (data set, seed) at a time.

For one data set and one seed: a stratified test split (`TEST_FRACTION`),
the rest is the pool; a seed set of one pool item per class, drawn at random
(the same for every arm of that seed); then each arm (a query strategy and an
estimator) repeatedly fits the estimator on its labelled items, records its
test accuracy, and asks its strategy for the next batch, whose true labels the
oracle reveals, until the label budget. Every arm of a seed shares the split,
the seed set and the label counts at which accuracy is measured.
"""
from __future__ import annotations

import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sklearn.model_selection import train_test_split

from bench.active_learning.datasets import dataset_spec, features_load

TEST_FRACTION = 0.3
COMMITTEE_MEMBERS = 5


class SimulationError(RuntimeError):
    """A strategy or estimator broke the contract the simulation relies on."""


@dataclass(frozen=True)
class Arm:
    """One curve per seed: a query strategy and the estimator it trains (and is scored on)."""

    strategy: str
    estimator: str

    @property
    def key(self) -> str:
        return arm_key(self.strategy, self.estimator)


def arm_key(strategy: str, estimator: str, default_estimator: str = "logistic_regression") -> str:
    return strategy if estimator == default_estimator else f"{strategy}/{estimator}"


def arm_from_key(key: str) -> Arm:
    strategy, _, estimator = key.partition("/")
    return Arm(strategy, estimator or "logistic_regression")


def label_schedule(n_seed: int, batch: int, budget: int) -> list[int]:
    """Label counts at which accuracy is measured: the seed set, then one batch more each round, ending at budget."""
    counts = list(range(n_seed, budget, batch))
    if counts[-1] != budget:
        counts.append(budget)
    return counts


def split_and_seed_set(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pool rows, test rows, seed set as positions in the pool): stratified split, one random pool item per class."""
    rows = np.arange(len(y))
    pool, test = train_test_split(rows, test_size=TEST_FRACTION, stratify=y, random_state=seed)
    rng = np.random.default_rng([seed, 1])
    y_pool = y[pool]
    seed_set = np.array(sorted(int(rng.choice(np.flatnonzero(y_pool == label))) for label in np.unique(y_pool)))
    return pool, test, seed_set


def _step_seed(seed: int, step: int) -> int:
    """The random_state handed to estimators and strategies in round `step`: the same for every arm."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def _estimator(name: str, random_state: int) -> Any:
    from learners.ml.estimators import estimator_create

    return estimator_create(name, random_state=random_state)


def _query_model(strategy: Any, estimator_name: str, fitted: Any, X: np.ndarray, y: np.ndarray,
                 random_state: int) -> Any:
    """What the strategy is handed: a fitted committee for qbc_*, otherwise the fitted estimator itself."""
    if "committee" in strategy.needs:
        from learners.ml.committee import BaggedCommittee

        committee = BaggedCommittee(_estimator(estimator_name, random_state), n_members=COMMITTEE_MEMBERS,
                                    random_state=random_state)
        return committee.fit(X, y)
    if "mc_dropout" in strategy.needs and not hasattr(fitted, "predict_proba_samples"):
        raise SimulationError(f"strategy {strategy.name} needs MC dropout (predict_proba_samples), which estimator "
                              f"{estimator_name} ({type(fitted).__name__}) does not have; run it with mlp")
    return fitted


def _check_indices(indices: Any, n_candidates: int, n: int, strategy: str) -> np.ndarray:
    picked = np.asarray(indices).astype(np.int64, copy=False).ravel()
    if len(picked) != n or len(np.unique(picked)) != n or picked.min() < 0 or picked.max() >= n_candidates:
        span = f", range {picked.min()}..{picked.max()}" if len(picked) else ""
        raise SimulationError(f"strategy {strategy} returned {len(picked)} indices ({len(np.unique(picked))} "
                              f"distinct{span}) when asked for {n} distinct rows of a pool of {n_candidates}")
    return picked


class RoundModel(Protocol):
    """Swaps the model a round uses (bench/active_learning/warm_start.py: the adapted meta-model until handover)."""

    def model_for_round(self, X_labelled: np.ndarray, y_labelled: np.ndarray, own_model: Any,
                        random_state: int) -> Any: ...


def run_curve(arm: Arm, X_pool: np.ndarray, y_pool: np.ndarray, X_test: np.ndarray, y_test: np.ndarray,
              seed_set: np.ndarray, schedule: list[int], seed: int, *, round_model: RoundModel | None = None) -> dict:
    """One learning curve: test accuracy after each round of `arm` on this split, and where the time went.

    With `round_model`, the model it returns for a round is the one scored on the test split and handed
    to the strategy, instead of the arm's own fitted estimator; the own estimator's test accuracy is
    recorded too (``own_accuracy``).
    """
    from learners.ml.strategies import STRATEGIES

    strategy = STRATEGIES[arm.strategy]
    labelled = [int(i) for i in seed_set]
    is_labelled = np.zeros(len(y_pool), dtype=bool)
    is_labelled[labelled] = True
    accuracy: list[float] = []
    own_accuracy: list[float] = []
    fit_s = query_s = 0.0
    for step, count in enumerate(schedule):
        if len(labelled) != count:
            raise SimulationError(f"{arm.key}: {len(labelled)} labels where the schedule says {count}")
        random_state = _step_seed(seed, step)
        t0 = time.perf_counter()
        X_lab, y_lab = X_pool[labelled], y_pool[labelled]
        model = _estimator(arm.estimator, random_state).fit(X_lab, y_lab)
        if round_model is not None:
            own_accuracy.append(float(np.mean(model.predict(X_test) == y_test)))
            model = round_model.model_for_round(X_lab, y_lab, model, random_state)
        fit_s += time.perf_counter() - t0
        accuracy.append(float(np.mean(model.predict(X_test) == y_test)))
        if step == len(schedule) - 1:
            break
        n = schedule[step + 1] - count
        candidates = np.flatnonzero(~is_labelled)
        t0 = time.perf_counter()
        query_model = _query_model(strategy, arm.estimator, model, X_lab, y_lab, random_state)
        indices, _ = strategy.query(query_model, X_pool[candidates], n, X_labelled=X_lab, random_state=random_state)
        query_s += time.perf_counter() - t0
        picked = candidates[_check_indices(indices, len(candidates), n, arm.strategy)]
        is_labelled[picked] = True
        labelled.extend(int(i) for i in picked)
    curve: dict = {"accuracy": accuracy, "fit_seconds": fit_s, "query_seconds": query_s}
    if round_model is not None:
        curve["own_accuracy"] = own_accuracy
    return curve


def full_data_accuracy(estimator: str, X_pool: np.ndarray, y_pool: np.ndarray, X_test: np.ndarray,
                       y_test: np.ndarray, seed: int) -> float:
    """Test accuracy of `estimator` trained on every pool item: the ceiling the curves are measured against."""
    model = _estimator(estimator, _step_seed(seed, 10_000)).fit(X_pool, y_pool)
    return float(np.mean(model.predict(X_test) == y_test))


def run_job(dataset: str, seed: int, arm_keys: list[str]) -> dict:
    """Every arm on one data set and seed. A failing arm is recorded with its traceback; the others still run."""
    started, cpu_started = time.perf_counter(), time.process_time()
    # A seed set of one item per class makes scikit-learn wonder whether y is a regression target; it is not.
    warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
    spec = dataset_spec(dataset)
    X, names = features_load(dataset)
    _, y = np.unique(names, return_inverse=True)  # class indices: every estimator gets the same plain labels
    pool, test, seed_set = split_and_seed_set(y, seed)
    X_pool, y_pool, X_test, y_test = X[pool], y[pool], X[test], y[test]
    budget = min(spec.budget, len(pool))
    schedule = label_schedule(len(seed_set), spec.batch, budget)
    arms = [arm_from_key(key) for key in arm_keys]
    result: dict = {"dataset": dataset, "seed": seed, "pool": len(pool), "test": len(test),
                    "seed_set": len(seed_set), "labels": schedule, "full_accuracy": {}, "arms": {}}
    for estimator in sorted({arm.estimator for arm in arms}):
        t0 = time.perf_counter()
        try:
            result["full_accuracy"][estimator] = full_data_accuracy(estimator, X_pool, y_pool, X_test, y_test, seed)
        except Exception:  # reported per data set in RESULTS.md; the other estimators' arms still run
            result["full_accuracy"][estimator] = None
            result.setdefault("errors", {})[f"full/{estimator}"] = traceback.format_exc(limit=8)
        result.setdefault("full_seconds", {})[estimator] = time.perf_counter() - t0
    for arm in arms:
        t0 = time.perf_counter()
        try:
            curve = run_curve(arm, X_pool, y_pool, X_test, y_test, seed_set, schedule, seed)
        except Exception:  # one broken strategy must not hide the others' results; the report lists it
            result["arms"][arm.key] = {"error": traceback.format_exc(limit=8)}
            print(f"  {dataset} seed {seed}: {arm.key} FAILED", flush=True)
            continue
        curve["seconds"] = time.perf_counter() - t0
        result["arms"][arm.key] = curve
        print(f"  {dataset} seed {seed}: {arm.key:<22} final {curve['accuracy'][-1]:.3f} "
              f"in {curve['seconds']:.1f} s", flush=True)
    result["seconds"] = time.perf_counter() - started
    result["cpu_seconds"] = time.process_time() - cpu_started  # this process only: the job's share of the cores
    return result
