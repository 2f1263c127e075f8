"""Federated aggregation maths on plain arrays: strategies, FedBuff, hierarchy, compression.

No database and no Django: every expected value is either worked out by hand
in the test or computed independently with numpy.
"""
from __future__ import annotations

import inspect
import math
import tracemalloc

import numpy as np
import pytest

from learners.federated.asynchronous import BufferedAsyncAggregator
from learners.federated.compression import (
    HEADER_BYTES_PER_ARRAY,
    CompressionError,
    QuantizedArrays,
    UnknownCompressor,
    compression_error,
    compressor_create,
    dequantize,
    quantize_8bit,
)
from learners.federated.hierarchy import Region, RegionalBuffer, RegionError, regional_updates
from learners.federated.strategies import (
    STRATEGIES,
    CoordinateMedian,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    Krum,
    StrategyError,
    TrimmedMean,
    UnknownStrategy,
    strategy_create,
)
from learners.federated.updates import ArraysMismatch, Update


def vector_update(values, num_examples: int = 1, site: str = "", base_version: int = 0, **metrics) -> Update:
    return Update({"w": np.asarray(values, dtype=np.float32)}, num_examples, metrics, site, base_version)


def random_update(rng: np.random.Generator, site: str = "", num_examples: int | None = None, base_version: int = 0):
    arrays = {"layer.weight": rng.normal(size=(3, 4)).astype(np.float32), "layer.bias": rng.normal(size=4).astype(np.float32)}
    count = int(rng.integers(1, 50)) if num_examples is None else num_examples
    return Update(arrays, count, {"loss": float(rng.uniform())}, site, base_version)


def planted_outlier_updates(n_honest: int, n_bad: int, seed: int = 0) -> tuple[list[Update], list[Update]]:
    rng = np.random.default_rng(seed)
    honest = [vector_update(1.0 + 0.01 * rng.normal(size=5), num_examples=10) for _ in range(n_honest)]
    # The attackers also claim a huge example count: robust rules must not care.
    bad = [vector_update(np.full(5, 1e6), num_examples=10**9) for _ in range(n_bad)]
    return honest, bad


# FedAvg and FedProx


def test_fedavg_is_the_example_weighted_mean_by_hand():
    change = FedAvg().combine([vector_update([1, 2], num_examples=1), vector_update([4, 8], num_examples=3)])

    np.testing.assert_allclose(change["w"], [(1 + 3 * 4) / 4, (2 + 3 * 8) / 4])
    assert change["w"].dtype == np.float32


def test_fedavg_matches_np_average_on_random_updates():
    rng = np.random.default_rng(1)
    updates = [random_update(rng) for _ in range(7)]
    counts = [u.num_examples for u in updates]

    change = FedAvg().combine(updates)

    for name in ("layer.weight", "layer.bias"):
        expected = np.average(np.stack([u.arrays[name] for u in updates]), axis=0, weights=counts)
        np.testing.assert_allclose(change[name], expected, rtol=1e-6, atol=1e-7)


def test_fedavg_aggregate_adds_the_change_to_the_weights():
    weights = {"w": np.array([10.0, 20.0], dtype=np.float32)}

    new = FedAvg().aggregate(weights, [vector_update([1, -1], 1), vector_update([3, 1], 1)])

    np.testing.assert_allclose(new["w"], [12.0, 20.0])


def test_fedavg_streams_10000_updates_from_a_generator_without_holding_them():
    size, n = 1000, 10_000

    def updates():
        for i in range(n):
            yield vector_update(np.full(size, i % 7, dtype=np.float32), num_examples=1 + i % 2)

    tracemalloc.start()
    change = FedAvg().combine(updates())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    counts = 1 + np.arange(n) % 2
    expected = np.sum((np.arange(n) % 7) * counts) / counts.sum()
    np.testing.assert_allclose(change["w"], np.full(size, expected), rtol=1e-6)
    # Holding the updates would need n * size * 4 bytes = 40 MB.
    assert peak < 2_000_000


def test_fedavg_with_zero_examples_in_total_raises():
    with pytest.raises(StrategyError, match="fedavg: .*0 examples"):
        FedAvg().combine([vector_update([1.0], num_examples=0), vector_update([2.0], num_examples=0)])


def test_fedavg_ignores_a_zero_example_update_among_others():
    change = FedAvg().combine([vector_update([100.0], num_examples=0), vector_update([2.0], num_examples=4)])

    np.testing.assert_allclose(change["w"], [2.0])


@pytest.mark.parametrize("updates, error", [
    ([], StrategyError),
    ([vector_update([1.0], num_examples=-3)], StrategyError),
    ([vector_update([1.0, 2.0]), vector_update([1.0])], ArraysMismatch),
])
def test_fedavg_refuses_bad_input(updates, error):
    with pytest.raises(error, match="fedavg"):
        FedAvg().combine(updates)


def test_fedprox_sends_mu_and_combines_like_fedavg():
    rng = np.random.default_rng(2)
    updates = [random_update(rng) for _ in range(5)]

    fedprox = FedProx(proximal_mu=0.1)

    assert fedprox.fit_config(round_number=3) == {"proximal_mu": 0.1}
    assert FedAvg().fit_config(round_number=3) == {}
    for name, value in FedAvg().combine(updates).items():
        np.testing.assert_array_equal(fedprox.combine(updates)[name], value)


@pytest.mark.parametrize("mu", [0.0, -0.5, float("nan")])
def test_fedprox_refuses_a_mu_that_is_not_positive(mu):
    with pytest.raises(StrategyError, match="fedprox: proximal_mu"):
        FedProx(proximal_mu=mu)


# Server optimisers


def test_fedadam_two_steps_by_hand():
    eta, beta1, beta2, tau = 0.1, 0.9, 0.99, 1e-3
    fedadam = FedAdam(eta=eta, beta1=beta1, beta2=beta2, tau=tau)
    weights = {"w": np.array([0.0, 1.0], dtype=np.float32)}
    d1, d2 = [0.1, -0.2], [0.1, 0.3]

    w1 = fedadam.aggregate(weights, [vector_update(d1, num_examples=4)])
    w2 = fedadam.aggregate(w1, [vector_update(d2, num_examples=4)])

    for i, w0 in enumerate([0.0, 1.0]):
        m1 = (1 - beta1) * d1[i]
        v1 = beta2 * tau**2 + (1 - beta2) * d1[i] ** 2
        expected_w1 = w0 + eta * m1 / (math.sqrt(v1) + tau)
        m2 = beta1 * m1 + (1 - beta1) * d2[i]
        v2 = beta2 * v1 + (1 - beta2) * d2[i] ** 2
        expected_w2 = expected_w1 + eta * m2 / (math.sqrt(v2) + tau)
        assert w1["w"][i] == pytest.approx(expected_w1, rel=1e-5)
        assert w2["w"][i] == pytest.approx(expected_w2, rel=1e-5)
        assert fedadam.state_dict()["m"]["w"][i] == pytest.approx(m2, rel=1e-6)
        assert fedadam.state_dict()["v"]["w"][i] == pytest.approx(v2, rel=1e-6)
    # First step of coordinate 0 worked out on paper: 0.1 * 0.01 / (sqrt(1.0099e-4) + 1e-3).
    assert w1["w"][0] == pytest.approx(0.09050, abs=1e-4)
    assert fedadam.state_dict()["steps"] == 2


def test_fedadam_resumes_from_its_state_dict():
    rng = np.random.default_rng(3)
    weights = random_update(rng).arrays
    first, second = random_update(rng), random_update(rng)
    original = FedAdam()
    after_first = original.aggregate(weights, [first])
    resumed = FedAdam()
    resumed.load_state_dict(original.state_dict())

    expected = original.aggregate(after_first, [second])
    got = resumed.aggregate(after_first, [second])

    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


def test_fedavgm_two_steps_by_hand():
    fedavgm = FedAvgM(server_lr=0.5, momentum=0.9)
    weights = {"w": np.array([1.0], dtype=np.float32)}

    w1 = fedavgm.aggregate(weights, [vector_update([0.2])])
    w2 = fedavgm.aggregate(w1, [vector_update([-0.1])])

    # v1 = 0.2, w1 = 1 + 0.5 * 0.2; v2 = 0.9 * 0.2 - 0.1 = 0.08, w2 = 1.1 + 0.5 * 0.08.
    assert w1["w"][0] == pytest.approx(1.1, rel=1e-6)
    assert w2["w"][0] == pytest.approx(1.14, rel=1e-6)
    assert fedavgm.state_dict()["velocity"]["w"][0] == pytest.approx(0.08, rel=1e-6)


def test_fedavgm_without_momentum_at_lr_1_is_fedavg():
    rng = np.random.default_rng(4)
    weights = random_update(rng).arrays
    updates = [random_update(rng) for _ in range(4)]

    got = FedAvgM(server_lr=1.0, momentum=0.0).aggregate(weights, updates)
    expected = FedAvg().aggregate(weights, updates)

    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7)


# Robust rules


@pytest.mark.parametrize("strategy", [CoordinateMedian(), TrimmedMean(trim_fraction=0.1)], ids=["median", "trimmed"])
def test_robust_rule_excludes_a_planted_outlier_that_pulls_fedavg_away(strategy):
    honest, bad = planted_outlier_updates(n_honest=9, n_bad=1)

    robust = strategy.combine(honest + bad)["w"]
    fedavg = FedAvg().combine(honest + bad)["w"]

    assert np.all(np.abs(robust - 1.0) < 0.05)
    assert np.all(fedavg > 1e5)


def test_trimmed_mean_by_hand():
    rows = [[1, 10], [2, -50], [3, 30], [4, 20], [100, 0]]

    change = TrimmedMean(trim_fraction=0.2).combine([vector_update(row) for row in rows])

    # floor(0.2 * 5) = 1 value cut at each end: mean(2, 3, 4) and mean(0, 10, 20).
    np.testing.assert_allclose(change["w"], [3.0, 10.0])


def test_trimmed_mean_with_two_outliers_of_ten_needs_trim_fraction_0_2():
    honest, bad = planted_outlier_updates(n_honest=8, n_bad=2)

    assert np.all(TrimmedMean(trim_fraction=0.1).combine(honest + bad)["w"] > 1e4)
    assert np.all(np.abs(TrimmedMean(trim_fraction=0.2).combine(honest + bad)["w"] - 1.0) < 0.05)


def test_median_by_hand_with_an_even_count():
    change = CoordinateMedian().combine([vector_update([v]) for v in (1, 5, 2, 100)])

    np.testing.assert_allclose(change["w"], [3.5])


def test_krum_returns_exactly_one_honest_update_with_two_byzantine_of_ten():
    honest, bad = planted_outlier_updates(n_honest=8, n_bad=2)

    change = Krum(num_byzantine=2).combine(bad[:1] + honest + bad[1:])["w"]

    assert any(np.array_equal(change, update.arrays["w"]) for update in honest)


def test_krum_and_multi_krum_by_hand():
    updates = [vector_update([v]) for v in (0.0, 0.1, 0.3, 5.0, 10.0)]

    # n=5, f=1: sum of squared distances to the 2 nearest others:
    # 0 -> 0.01 + 0.09, 0.1 -> 0.01 + 0.04, 0.3 -> 0.04 + 0.09, 5 -> 22.09 + 24.01, 10 -> 25 + 94.09.
    np.testing.assert_allclose(Krum(num_byzantine=1).scores(np.array([[0.0], [0.1], [0.3], [5.0], [10.0]])),
                               [0.10, 0.05, 0.13, 46.10, 119.09], rtol=1e-6)
    assert Krum(num_byzantine=1).combine(updates)["w"][0] == pytest.approx(0.1)
    assert Krum(num_byzantine=1, multi=2).combine(updates)["w"][0] == pytest.approx(0.05)
    assert Krum(num_byzantine=1, multi=3).combine(updates)["w"][0] == pytest.approx(0.4 / 3)


def test_krum_with_too_few_updates_raises():
    updates = [vector_update([v]) for v in range(4)]

    with pytest.raises(StrategyError, match=r"krum: 4 updates .* more than 2 \* 1 \+ 2 = 4"):
        Krum(num_byzantine=1).combine(updates)


def test_multi_krum_refuses_to_average_more_than_n_minus_f():
    with pytest.raises(StrategyError, match="krum: multi 5"):
        Krum(num_byzantine=1, multi=5).combine([vector_update([v]) for v in range(5)])


# Registry


def test_registry_holds_every_strategy_under_its_own_name():
    assert set(STRATEGIES) == {"fedavg", "fedprox", "fedadam", "fedavgm", "median", "trimmed_mean", "krum"}
    assert all(cls.name == name for name, cls in STRATEGIES.items())
    assert {name for name, cls in STRATEGIES.items() if cls.weighted_mean} == {"fedavg", "fedprox", "fedadam", "fedavgm"}


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_registry_parameters_match_the_constructor_defaults(name):
    cls = STRATEGIES[name]
    signature = inspect.signature(cls.__init__)
    declared = {p: spec[1] for p, spec in cls.PARAMETERS.items()}
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    defaults = {p.name: p.default for p in signature.parameters.values() if p.name != "self" and p.kind in keyword}

    assert declared == defaults
    assert isinstance(strategy_create(name, **declared), cls)


def test_strategy_create_passes_parameters():
    strategy = strategy_create("trimmed_mean", trim_fraction=0.25)

    assert isinstance(strategy, TrimmedMean) and strategy.trim_fraction == 0.25


def test_strategy_create_refuses_an_unknown_name():
    with pytest.raises(UnknownStrategy, match="unknown aggregation strategy 'fedsgd'.*'fedavg'"):
        strategy_create("fedsgd")


@pytest.mark.parametrize("name, params, message", [
    ("fedprox", {"mu2": 0.1}, "fedprox: unknown parameter 'mu2'; accepted: proximal_mu"),
    ("fedavg", {"proximal_mu": 0.1}, "fedavg: unknown parameter 'proximal_mu'; fedavg takes no parameters"),
    ("trimmed_mean", {"trim_fraction": 0.6}, r"trimmed_mean: trim_fraction 0.6 must be in \[0, 0.5\)"),
    ("fedadam", {"beta2": 1.0}, r"fedadam: beta2 1.0 must be in \[0, 1\)"),
    ("krum", {"multi": 1.5}, "krum: parameter 'multi' must be int, got 1.5"),
    ("fedavgm", {"momentum": True}, "fedavgm: parameter 'momentum' must be float, got True"),
    ("krum", {"num_byzantine": -1}, "krum: num_byzantine -1 must be >= 0"),
])
def test_strategy_create_refuses_bad_parameters_naming_the_strategy(name, params, message):
    with pytest.raises(StrategyError, match=message):
        strategy_create(name, **params)


# FedBuff


def test_fedbuff_aggregates_on_every_second_arrival_with_k_2():
    aggregator = BufferedAsyncAggregator({"w": np.zeros(2, dtype=np.float32)}, buffer_size=2)

    assert aggregator.receive(vector_update([1, 0], 1)) is False
    assert aggregator.version == 0 and aggregator.buffered == 1
    assert aggregator.receive(vector_update([0, 3], 1)) is True
    assert aggregator.version == 1 and aggregator.buffered == 0
    np.testing.assert_allclose(aggregator.weights["w"], [0.5, 1.5])
    assert aggregator.receive(vector_update([2, 2], 1, base_version=1)) is False
    assert aggregator.receive(vector_update([2, 2], 1, base_version=1)) is True
    assert aggregator.version == 2
    np.testing.assert_allclose(aggregator.weights["w"], [2.5, 3.5])


def advance(aggregator: BufferedAsyncAggregator, versions: int) -> None:
    """Move the aggregator on by `versions` aggregations of zero changes."""
    for _ in range(versions * aggregator.buffer_size):
        aggregator.receive(vector_update([0, 0], 1, base_version=aggregator.version))


def test_fedbuff_counts_an_update_with_staleness_3_half_for_exponent_one_half():
    aggregator = BufferedAsyncAggregator({"w": np.zeros(2, dtype=np.float32)}, buffer_size=2, staleness_exponent=0.5)
    advance(aggregator, 3)

    aggregator.receive(vector_update([1, 0], 5, base_version=3))
    aggregator.receive(vector_update([0, 1], 5, base_version=0))

    # s(0) = 1, s(3) = 1 / sqrt(4) = 1/2; divided by the 10 examples as the paper divides by K.
    assert aggregator.staleness_weight(3) == 0.5
    np.testing.assert_allclose(aggregator.weights["w"], [0.5, 0.25])


def test_fedbuff_weights_by_examples_unless_told_to_follow_the_paper():
    by_examples = BufferedAsyncAggregator({"w": np.zeros(2, dtype=np.float32)}, buffer_size=2)
    uniform = BufferedAsyncAggregator({"w": np.zeros(2, dtype=np.float32)}, buffer_size=2, weight_by_examples=False)

    for aggregator in (by_examples, uniform):
        aggregator.receive(vector_update([1, 0], 1))
        aggregator.receive(vector_update([0, 1], 3))

    np.testing.assert_allclose(by_examples.weights["w"], [0.25, 0.75])
    np.testing.assert_allclose(uniform.weights["w"], [0.5, 0.5])


def test_fedbuff_refuses_updates_staler_than_max_staleness():
    aggregator = BufferedAsyncAggregator({"w": np.zeros(2, dtype=np.float32)}, buffer_size=2, max_staleness=2)
    advance(aggregator, 3)
    before = aggregator.weights

    assert aggregator.receive(vector_update([9, 9], 1, base_version=0)) is False
    assert aggregator.receive(vector_update([9, 9], 1, base_version=1)) is False
    assert aggregator.refused_stale == 1
    assert aggregator.buffered == 1
    np.testing.assert_array_equal(aggregator.weights["w"], before["w"])


def test_fedbuff_refuses_an_update_from_a_future_version():
    aggregator = BufferedAsyncAggregator({"w": np.zeros(2, dtype=np.float32)}, buffer_size=2)

    with pytest.raises(StrategyError, match="fedbuff: update from site 'a' starts from version 4"):
        aggregator.receive(vector_update([1, 1], 1, site="a", base_version=4))


def test_fedbuff_with_k_1_and_no_staleness_applies_each_update_in_turn():
    rng = np.random.default_rng(5)
    weights = random_update(rng).arrays
    aggregator = BufferedAsyncAggregator(weights, buffer_size=1, server_lr=1.0)
    expected = {name: value.copy() for name, value in weights.items()}

    for _ in range(6):
        update = random_update(rng, base_version=aggregator.version)
        assert aggregator.receive(update) is True
        expected = {name: value + update.arrays[name] for name, value in expected.items()}

    assert aggregator.version == 6
    for name in expected:
        np.testing.assert_array_equal(aggregator.weights[name], expected[name])


def test_fedbuff_moves_weights_with_a_server_optimiser():
    rng = np.random.default_rng(6)
    weights = random_update(rng).arrays
    aggregator = BufferedAsyncAggregator(weights, buffer_size=1, strategy=FedAdam(eta=0.05))
    reference, expected = FedAdam(eta=0.05), weights

    for _ in range(3):
        update = random_update(rng, base_version=aggregator.version)
        aggregator.receive(update)
        expected = reference.apply(expected, update.arrays)

    for name in expected:
        np.testing.assert_allclose(aggregator.weights[name], expected[name], rtol=1e-6)


def test_fedbuff_refuses_a_robust_strategy():
    with pytest.raises(StrategyError, match="fedbuff: strategy 'krum' .* cannot run asynchronously"):
        BufferedAsyncAggregator({"w": np.zeros(1, dtype=np.float32)}, buffer_size=2, strategy=Krum())


# Hierarchy

REGIONS = [Region("eu", ["paris", "berlin", "rome", "oslo"]), Region("us", ["nyc", "sf"]),
           Region("asia", ["tokyo", "seoul", "delhi", "lima", "perth", "cairo"])]


def test_fedavg_over_regions_equals_flat_fedavg():
    rng = np.random.default_rng(7)
    sites = [site for region in REGIONS for site in region.sites]
    updates = [random_update(rng, site=site, base_version=int(rng.integers(3, 9))) for site in sites]

    regional = regional_updates(updates, REGIONS)

    flat = FedAvg().combine(updates)
    hierarchical = FedAvg().combine(regional)
    for name in flat:
        np.testing.assert_allclose(hierarchical[name], flat[name], rtol=1e-5, atol=1e-6)
    # The plain mean of the regional changes is not FedAvg: the counts carry the weighting.
    assert not np.allclose(np.mean([r.arrays["layer.bias"] for r in regional], axis=0), flat["layer.bias"], atol=1e-3)


def test_regional_update_carries_count_metrics_name_and_oldest_version():
    updates = [vector_update([1, 1], 1, site="nyc", base_version=4, loss=0.2),
               vector_update([5, 1], 3, site="sf", base_version=2, loss=0.6)]

    (us,) = regional_updates(updates, REGIONS)

    assert (us.site, us.num_examples, us.base_version) == ("us", 4, 2)
    assert us.metrics["loss"] == pytest.approx((0.2 + 3 * 0.6) / 4)
    np.testing.assert_allclose(us.arrays["w"], [4.0, 1.0])


@pytest.mark.parametrize("regions, updates, message", [
    ([Region("a", ["x"]), Region("b", ["x"])], [], "site 'x' is in both region 'a' and 'b'"),
    ([Region("a", ["x"]), Region("a", ["y"])], [], "two regions are named 'a'"),
    (REGIONS, [vector_update([1.0], site="mars")], r"site 'mars' is in no region; regions: \['eu', 'us', 'asia'\]"),
    (REGIONS, [vector_update([1.0], site="sf"), vector_update([1.0], site="sf")], "site 'sf' sent two updates"),
])
def test_regional_updates_refuse_a_bad_layout_or_site(regions, updates, message):
    with pytest.raises(RegionError, match=message):
        regional_updates(updates, regions)


def test_region_refuses_no_sites_or_a_repeated_site():
    with pytest.raises(RegionError, match="region 'eu' has no sites"):
        Region("eu", [])
    with pytest.raises(RegionError, match=r"region 'eu' lists sites \['oslo'\] more than once"):
        Region("eu", ["oslo", "rome", "oslo"])


def test_regional_buffer_forwards_every_k_arrivals_and_on_flush():
    buffer = RegionalBuffer(REGIONS[1], every=2)

    assert buffer.receive(vector_update([2.0], 1, site="nyc")) is None
    forwarded = buffer.receive(vector_update([4.0], 3, site="sf"))
    assert forwarded is not None and forwarded.num_examples == 4 and forwarded.site == "us"
    np.testing.assert_allclose(forwarded.arrays["w"], [3.5])
    assert buffer.flush() is None
    buffer.receive(vector_update([7.0], 2, site="nyc"))
    np.testing.assert_allclose(buffer.flush().arrays["w"], [7.0])
    with pytest.raises(RegionError, match="site 'tokyo' is not in region 'us'"):
        buffer.receive(vector_update([1.0], 1, site="tokyo"))


def test_async_aggregator_fed_by_regional_buffers_makes_progress_by_hand():
    regions = [Region("eu", ["paris", "rome"]), Region("us", ["nyc", "sf"])]
    buffers = {region.name: RegionalBuffer(region, every=2) for region in regions}
    region_of = {site: region.name for region in regions for site in region.sites}
    aggregator = BufferedAsyncAggregator({"w": np.zeros(1, dtype=np.float32)}, buffer_size=2)

    for site in ["paris", "nyc", "rome", "sf"] * 2:
        combined = buffers[region_of[site]].receive(vector_update([1.0], 1, site=site, base_version=0))
        if combined is not None:
            aggregator.receive(combined)

    # First aggregation: both regions fresh, change 1. Second: both one version stale, 1 / sqrt(2).
    assert aggregator.version == 2
    assert aggregator.weights["w"][0] == pytest.approx(1 + 1 / math.sqrt(2), rel=1e-6)


def test_async_regional_buffers_with_k_1_equal_feeding_sites_directly():
    rng = np.random.default_rng(8)
    sites = [site for region in REGIONS for site in region.sites]
    weights = random_update(rng).arrays
    direct = BufferedAsyncAggregator(weights, buffer_size=3, max_staleness=4)
    via_regions = BufferedAsyncAggregator(weights, buffer_size=3, max_staleness=4)
    buffers = {region.name: RegionalBuffer(region, every=1) for region in REGIONS}
    region_of = {site: region.name for region in REGIONS for site in region.sites}

    for _ in range(40):
        lag = int(rng.integers(0, 6))
        update = random_update(rng, site=str(rng.choice(sites)), base_version=max(0, direct.version - lag))
        direct.receive(update)
        via_regions.receive(buffers[region_of[update.site]].receive(update))

    assert direct.version == via_regions.version > 5
    assert direct.refused_stale == via_regions.refused_stale > 0
    for name in weights:
        np.testing.assert_allclose(via_regions.weights[name], direct.weights[name], rtol=1e-6, atol=1e-6)


# Compression


def test_deterministic_quantisation_errs_at_most_half_a_step():
    rng = np.random.default_rng(9)
    arrays = {"big": (1e3 * rng.normal(size=(50, 20))).astype(np.float32),
              "small": (1e-4 * rng.normal(size=300)).astype(np.float32),
              "offset": (5.0 + rng.uniform(size=64)).astype(np.float32)}

    quantized = quantize_8bit(arrays)
    decoded = dequantize(quantized)

    for name, value in arrays.items():
        assert quantized.codes[name].dtype == np.uint8 and decoded[name].shape == value.shape
        scale = float(quantized.scale[name])
        assert scale == pytest.approx((value.max() - value.min()) / 255, rel=1e-6)
        error = np.abs(decoded[name].astype(np.float64) - value)
        assert error.max() <= scale / 2 * (1 + 1e-5) + 1e-7 * np.abs(value).max()
    report = compression_error(arrays)
    assert 0 < report["relative_l2"] < 0.01
    assert report["max_abs"] <= float(quantized.scale["big"]) / 2 * (1 + 1e-5)


def test_stochastic_rounding_is_unbiased_and_deterministic_is_not():
    rng = np.random.default_rng(10)
    # 0 and 255 pin the range; 100.3 steps sits 0.3 of a step above a code.
    values = np.array([0.0, 255.0] + [100.3] * 50, dtype=np.float32)
    draws = 4000

    mean_decoded = np.mean(
        [dequantize(quantize_8bit({"w": values}, stochastic=True, rng=rng))["w"] for _ in range(draws)], axis=0
    )
    deterministic = dequantize(quantize_8bit({"w": values}))["w"]

    # scale is 1: one draw errs by < 1, the mean of 4000 by about 0.46 / sqrt(4000) = 0.007.
    assert np.abs(mean_decoded[2:] - 100.3).max() < 0.03
    assert deterministic[2:] == pytest.approx(np.full(50, 100.0))


def test_stochastic_rounding_is_reproducible_with_a_seed():
    values = {"w": np.random.default_rng(11).normal(size=100).astype(np.float32)}

    first = quantize_8bit(values, stochastic=True, rng=np.random.default_rng(0))
    second = quantize_8bit(values, stochastic=True, rng=np.random.default_rng(0))

    np.testing.assert_array_equal(first.codes["w"], second.codes["w"])


def test_constant_arrays_round_trip_exactly():
    arrays = {"zeros": np.zeros((3, 4), dtype=np.float32), "sevens": np.full(5, 0.7, dtype=np.float32),
              "one": np.array([-3.25], dtype=np.float32)}

    for stochastic in (False, True):
        decoded = dequantize(quantize_8bit(arrays, stochastic=stochastic, rng=np.random.default_rng(0)))
        for name, value in arrays.items():
            np.testing.assert_array_equal(decoded[name], value)
    assert compression_error(arrays)["max_abs"] == 0.0


def test_quantised_payload_is_four_times_smaller_header_included():
    arrays = {"w": np.ones((100, 100), dtype=np.float32) * np.arange(100, dtype=np.float32),
              "b": np.arange(100, dtype=np.float32)}

    quantized = quantize_8bit(arrays)

    assert quantized.nbytes == 100 * 100 + 100 + 2 * HEADER_BYTES_PER_ARRAY
    ratio = (100 * 100 + 100) * 4 / quantized.nbytes
    assert 3.99 < ratio < 4
    assert compression_error(arrays)["byte_ratio"] == pytest.approx(ratio)


def test_quantisation_refuses_non_finite_values_and_stochastic_without_rng():
    with pytest.raises(CompressionError, match="int8: array 'w' holds non-finite values"):
        quantize_8bit({"w": np.array([1.0, np.inf], dtype=np.float32)})
    with pytest.raises(CompressionError, match="needs an rng"):
        quantize_8bit({"w": np.ones(2, dtype=np.float32)}, stochastic=True)


def test_compressor_registry_round_trips_and_counts_bytes():
    rng = np.random.default_rng(12)
    arrays = random_update(rng).arrays
    none, int8 = compressor_create("none"), compressor_create("int8")

    plain = none.compress(arrays)
    packed = int8.compress(arrays, np.random.default_rng(0))

    for name in arrays:
        np.testing.assert_array_equal(none.decompress(plain)[name], arrays[name])
        assert np.abs(int8.decompress(packed)[name] - arrays[name]).max() <= float(packed.scale[name]) * (1 + 1e-5)
    assert isinstance(packed, QuantizedArrays)
    assert none.payload_nbytes(plain) == 16 * 4
    assert int8.payload_nbytes(packed) == 16 + 2 * HEADER_BYTES_PER_ARRAY
    with pytest.raises(CompressionError, match="int8: expected a QuantizedArrays payload"):
        int8.decompress(plain)
    with pytest.raises(UnknownCompressor, match="unknown compressor 'zip'"):
        compressor_create("zip")
