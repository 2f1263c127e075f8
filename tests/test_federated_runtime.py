"""The coordinator over the in-process backend: rounds, dropouts, regions, compression, async, privacy.

Real digits split non-IID across sites; every number is checked against an
independent computation (local training called directly, weighted means in numpy).
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from learners.federated.backends.inprocess import InProcessBackend
from learners.federated.coordinator import Coordinator, FederationError, FederationPlan
from learners.federated.hierarchy import Region
from learners.federated.local_training import LocalTraining, local_train
from learners.federated.models import FederatedModel, ModelSpec
from learners.federated.privacy import DifferentialPrivacy
from learners.federated.site import Site, classes_digest
from learners.federated.strategies import strategy_create
from learners.federated.updates import arrays_norm

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLASSES = [str(d) for d in range(10)]


def dirichlet_split(y: np.ndarray, n_sites: int, alpha: float, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(n_sites)]
    for label in np.unique(y):
        index = rng.permutation(np.flatnonzero(y == label))
        cuts = (np.cumsum(rng.dirichlet([alpha] * n_sites)) * len(index)).astype(int)[:-1]
        for site, chunk in enumerate(np.split(index, cuts)):
            parts[site].extend(chunk.tolist())
    return [np.sort(np.asarray(p, dtype=int)) for p in parts]


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    test, train = order[:400], order[400:]
    return X[train], y[train], X[test], y[test]


def make_sites(X, y, n_sites=5, alpha=0.5, seed=0):
    parts = dirichlet_split(y, n_sites, alpha, seed)
    return {f"s{i}": Site(f"s{i}", rows=(lambda p=p: (X[p], y[p])), classes=CLASSES) for i, p in enumerate(parts)}, parts


def make_plan(strategy="fedavg", **overrides):
    plan = FederationPlan(strategy=strategy_create(strategy, **overrides.pop("strategy_params", {})),
                          model=ModelSpec("linear", 64, 10), training=LocalTraining(epochs=1, lr=0.5),
                          rounds=5, timeout=10.0, classes_digest=classes_digest(CLASSES))
    for key, value in overrides.items():
        setattr(plan, key, value)
    return plan


def test_fedavg_round_equals_weighted_mean_of_local_training(digits):
    X, y, _, _ = digits
    sites, parts = make_sites(X, y)
    plan = make_plan()
    coordinator = Coordinator(InProcessBackend(sites), plan)
    start = coordinator.weights
    result = coordinator.round()
    assert result.updates == 5 and not result.dropouts
    seed = message_decode_first_out(coordinator)["seed"]
    model = FederatedModel(plan.model)
    updates = [local_train(model, start, X[p], y[p], plan.training, seed=seed) for p in parts]
    counts = np.array([u.num_examples for u in updates], dtype=float)
    for name in start:
        expected = start[name] + np.tensordot(counts / counts.sum(), np.stack([u.arrays[name] for u in updates]), 1)
        np.testing.assert_allclose(coordinator.weights[name], expected, atol=1e-5)
    assert result.metrics["accuracy_before"] == pytest.approx(
        sum(u.metrics["accuracy_before"] * u.num_examples for u in updates) / counts.sum(), abs=1e-6)


def message_decode_first_out(coordinator):
    return coordinator.audit.records[0].meta


def test_fedavg_learns_non_iid_digits(digits):
    X, y, X_test, y_test = digits
    sites, _ = make_sites(X, y)
    model = FederatedModel(ModelSpec("linear", 64, 10))
    coordinator = Coordinator(InProcessBackend(sites), make_plan(rounds=15),
                              evaluate=lambda w: model.evaluate(w, X_test, y_test))
    before = model.evaluate(coordinator.weights, X_test, y_test)["accuracy"]
    results = coordinator.run()
    assert before < 0.3
    assert results[-1].evaluation["accuracy"] > 0.85
    assert [r.version for r in results] == list(range(1, 16))


def test_site_that_never_answers_is_a_dropout_not_a_hang(digits):
    X, y, _, _ = digits
    sites, _ = make_sites(X, y)
    slow = {"s1": 100.0}
    backend = InProcessBackend(sites, latency=lambda site, rng: slow.get(site, 1.0),
                               fail=lambda site, number: site == "s3")
    coordinator = Coordinator(backend, make_plan(timeout=5.0))
    result = coordinator.round()
    assert set(result.dropouts) == {"s1", "s3"}
    assert result.updates == 3 and result.aggregated
    assert result.finished_at - result.started_at == pytest.approx(5.0)
    # s1's late reply from round 1 is never delivered into round 2
    slow.clear()
    second = coordinator.round()
    assert second.updates == 4 and set(second.dropouts) == {"s3"}


def test_round_with_too_few_updates_keeps_the_weights(digits):
    X, y, _, _ = digits
    sites, _ = make_sites(X, y)
    coordinator = Coordinator(InProcessBackend(sites, fail=lambda site, number: site != "s0"),
                              make_plan(min_updates=2))
    before = coordinator.weights
    result = coordinator.round()
    assert not result.aggregated and result.updates == 1 and coordinator.version == 0
    for name in before:
        np.testing.assert_array_equal(coordinator.weights[name], before[name])


def test_regions_give_flat_fedavg_with_less_coordinator_ingress(digits):
    X, y, _, _ = digits
    sites, _ = make_sites(X, y, n_sites=8)
    regions = [Region("east", ["s0", "s1", "s2", "s3"]), Region("west", ["s4", "s5", "s6", "s7"])]
    flat = Coordinator(InProcessBackend(sites), make_plan())
    tiered = Coordinator(InProcessBackend(sites), make_plan(regions=regions))
    squeezed = Coordinator(InProcessBackend(sites), make_plan(regions=regions, compression="int8"))
    a, b, c = flat.round(), tiered.round(), squeezed.round()
    for name in flat.weights:
        np.testing.assert_allclose(tiered.weights[name], flat.weights[name], atol=1e-5)
        np.testing.assert_allclose(squeezed.weights[name], flat.weights[name], atol=2e-2)
    assert a.bytes_in == a.site_bytes_in
    assert b.site_bytes_in == a.site_bytes_in and b.bytes_in < a.bytes_in / 2  # 2 messages instead of 8
    assert c.bytes_in < b.bytes_in / 2  # 1 byte per value instead of 4, plus the JSON header
    assert {r.site for r in tiered.audit.records if r.kind == "region_update"} == {"east", "west"}


def test_asynchronous_run_uses_fast_sites_more_and_discounts_stale_ones(digits):
    X, y, X_test, y_test = digits
    sites, _ = make_sites(X, y)
    latency = {"s0": 10.0}  # a straggler
    model = FederatedModel(ModelSpec("linear", 64, 10))
    coordinator = Coordinator(InProcessBackend(sites, latency=lambda s, rng: latency.get(s, 1.0)),
                              make_plan(timeout=60.0), evaluate=lambda w: model.evaluate(w, X_test, y_test))
    results = coordinator.run_async(buffer_size=2, aggregations=20)
    assert [r.version for r in results] == list(range(1, 21))
    seen = [site for r in results for site in r.participants]
    assert seen.count("s1") > 5 * max(seen.count("s0"), 1)
    assert results[-1].evaluation["accuracy"] > 0.6
    assert results[-1].finished_at < 25.0  # a synchronous round would wait 10 s for s0 every time


def test_differential_privacy_clips_every_update_and_reports_the_accountants_epsilon(digits):
    from opacus.accountants import RDPAccountant

    X, y, _, _ = digits
    sites, _ = make_sites(X, y)
    privacy = DifferentialPrivacy(clip_norm=0.5, noise_multiplier=1.1, delta=1e-5, mode="coordinator")
    coordinator = Coordinator(InProcessBackend(sites), make_plan(privacy=privacy, sites_per_round=4, rounds=3))
    results = coordinator.run()
    for record in coordinator.audit.records:
        if record.direction == "in":
            assert record.meta["num_examples"] == 1
        if record.direction == "in":
            assert record.meta["metrics"] == {}  # exact local facts would spend privacy the accountant misses
    reference = RDPAccountant()
    for _ in range(3):
        reference.step(noise_multiplier=1.1, sample_rate=4 / 5)
    assert results[-1].epsilon == pytest.approx(reference.get_epsilon(1e-5))
    assert results[0].epsilon < results[1].epsilon < results[2].epsilon


def test_clipped_updates_reach_the_coordinator_within_the_norm(digits):
    X, y, _, _ = digits
    sites, _ = make_sites(X, y)
    privacy = DifferentialPrivacy(clip_norm=0.25, noise_multiplier=1.0, mode="coordinator")
    coordinator = Coordinator(InProcessBackend(sites), make_plan(privacy=privacy))
    seen = []
    original = coordinator._update_from

    def spy(*args, **kwargs):
        update = original(*args, **kwargs)
        if update is not None:
            seen.append(arrays_norm(update.arrays))
        return update

    coordinator._update_from = spy
    coordinator.round()
    assert len(seen) == 5 and max(seen) <= 0.25 + 1e-5


def test_plan_errors_name_the_problem(digits):
    X, y, _, _ = digits
    sites, _ = make_sites(X, y)
    with pytest.raises(FederationError, match="sites_per_round 9"):
        Coordinator(InProcessBackend(sites), make_plan(sites_per_round=9))
    with pytest.raises(FederationError, match=r"\['s4'\] are in no region"):
        Coordinator(InProcessBackend(sites), make_plan(regions=[Region("r", ["s0", "s1", "s2", "s3"])]))
    with pytest.raises(FederationError, match="needs a whole round"):
        Coordinator(InProcessBackend(sites), make_plan(strategy="median")).run_async(buffer_size=2, aggregations=1)


def test_site_with_other_classes_refuses_and_drops_out(digits):
    X, y, _, _ = digits
    sites, parts = make_sites(X, y)
    sites["s2"] = Site("s2", rows=lambda: (X[parts[2]], y[parts[2]]), classes=list("abcdefghij"))
    result = Coordinator(InProcessBackend(sites), make_plan()).round()
    assert result.dropouts == {"s2": "refused: this site's classes differ from the federation's (names or order)"}


def test_secure_aggregation_round_equals_plain_fedavg_and_the_coordinator_sees_only_masked_vectors(digits):
    X, y, _, _ = digits
    sites, _ = make_sites(X, y, n_sites=6)
    plain = Coordinator(InProcessBackend(sites), make_plan(seed=3))
    secure = Coordinator(InProcessBackend(sites), make_plan(seed=3, secure=True))
    a, b = plain.round(), secure.round()
    for name in plain.weights:
        np.testing.assert_allclose(secure.weights[name], plain.weights[name], atol=1e-4)
    assert b.updates == 6 and b.metrics["accuracy_before"] == pytest.approx(a.metrics["accuracy_before"], abs=1e-3)
    incoming = [r for r in secure.audit.records if r.direction == "in"]
    assert {r.kind for r in incoming} == {"secagg_keys", "secagg_shares", "secagg_masked", "secagg_reveal"}
    assert not any(name in r.arrays for r in incoming for name in plain.weights)  # no update in the clear
    assert all(r.arrays["y"][0] == "uint32" for r in incoming if r.kind == "secagg_masked")


def test_secure_aggregation_recovers_the_sum_when_a_third_drop_out(digits):
    X, y, _, _ = digits
    sites, parts = make_sites(X, y, n_sites=6)
    # s4 and s5 answer the first two messages, then stop answering (after sharing their keys)
    def fail(site, number):  # requests: 0 train (keys), 1 key list (shares), 2 input, 3 unmask
        return site in ("s4", "s5") and number >= 2

    secure = Coordinator(InProcessBackend(sites, fail=fail), make_plan(seed=3, secure=True))
    start = secure.weights
    result = secure.round()
    assert set(result.dropouts) == {"s4", "s5"} and result.updates == 4
    model = FederatedModel(secure.plan.model)
    seed = secure.audit.records[0].meta["seed"]
    updates = [local_train(model, start, X[parts[i]], y[parts[i]], secure.plan.training, seed=seed) for i in range(4)]
    counts = np.array([u.num_examples for u in updates], dtype=float)
    for name in start:
        expected = start[name] + np.tensordot(counts / counts.sum(), np.stack([u.arrays[name] for u in updates]), 1)
        np.testing.assert_allclose(secure.weights[name], expected, atol=1e-4)


def test_asynchronous_run_with_limited_concurrency_draws_every_site_in_turn(digits):
    X, y, _, _ = digits
    sites, _ = make_sites(X, y, n_sites=10)
    coordinator = Coordinator(InProcessBackend(sites), make_plan())
    results = coordinator.run_async(buffer_size=2, aggregations=30, concurrency=3)
    sent_to = {r.site for r in coordinator.audit.records if r.direction == "out"}
    assert sent_to == set(sites)  # not only the first three
    assert all(r.updates == 2 for r in results)
    with pytest.raises(FederationError, match="concurrency 11 must be between 1 and 10"):
        Coordinator(InProcessBackend(sites), make_plan()).run_async(buffer_size=2, aggregations=1, concurrency=11)
