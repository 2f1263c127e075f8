"""Secure aggregation and differential privacy for federated rounds, on plain arrays (no Django)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from opacus.accountants import RDPAccountant
from scipy import stats

from learners.federated.privacy import (
    DifferentialPrivacy,
    PrivacyAccountant,
    PrivacyConfigError,
    PrivacyInputError,
    epsilon_for,
)
from learners.federated.secure_aggregation import (
    DEFAULT_SCALE_BITS,
    PRIME,
    SecAggClient,
    SecAggServer,
    SecureAggregationAborted,
    SecureAggregationConfigError,
    SecureAggregationProtocolError,
    SecureAggregationUnsupported,
    check_strategy,
    default_threshold,
    encode_fixed_point,
    expand_mask,
    secure_fedavg_change,
    secure_sum,
    shamir_combine,
    shamir_split,
)
from learners.federated.strategies.base import Strategy
from learners.federated.updates import Update, arrays_flatten, arrays_norm

TOLERANCE_PER_CLIENT = 2.0 ** -(DEFAULT_SCALE_BITS + 1)


def random_vectors(n, d, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return {i: rng.uniform(-scale, scale, d) for i in range(n)}


def run_round(vectors, *, drop_before=(), drop_after=(), seed=0):
    """Drive one round by hand, keeping every message the server handles."""
    ids = sorted(vectors)
    length = len(next(iter(vectors.values())))
    server = SecAggServer(ids, vector_length=length)
    clients = {c: SecAggClient(c, threshold=server.threshold, n_clients=len(ids), seed=seed) for c in ids}
    for c in ids:
        server.receive_keys(c, clients[c].advertise_keys())
    keys = server.broadcast_keys()
    for c in ids:
        server.receive_shares(c, clients[c].share_keys(keys))
    routed = server.route_shares()
    masked = {}
    for c in sorted(set(ids) - set(drop_before)):
        masked[c] = clients[c].masked_input(vectors[c], routed[c])
        server.receive_masked_input(c, masked[c])
    survivors, dropped = server.unmask_request()
    reveals = {}
    for c in sorted(survivors - set(drop_after)):
        reveals[c] = clients[c].unmask(survivors, dropped)
        server.receive_unmask(c, reveals[c])
    return {"server": server, "clients": clients, "routed": routed, "masked": masked, "reveals": reveals}


def rebuild_secret(reveals, kind, owner, threshold):
    """What the server does: Lagrange at 0 over t holders' shares (client u holds the point x = u + 1)."""
    holders = sorted(reveals)[:threshold]
    value = shamir_combine({h + 1: int.from_bytes(reveals[h][kind][owner], "big") for h in holders})
    return value.to_bytes(32, "big")


def uniformity_p_value(words):
    """Chi-square p-value of the bytes of uint32 words against uniform over 0..255."""
    counts = np.bincount(np.ascontiguousarray(words, dtype=np.uint32).view(np.uint8), minlength=256)
    return stats.chisquare(counts).pvalue


# ------------------------------------------------------------ mask cancellation

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_secure_sum_without_dropouts_equals_plain_sum(seed):
    vectors = random_vectors(7, 1000, seed, scale=10.0)

    result = secure_sum(vectors, seed=seed)

    error = np.max(np.abs(result.sum - sum(vectors.values())))
    assert error <= 7 * TOLERANCE_PER_CLIENT * (1 + 1e-9)
    assert result.survivors == frozenset(range(7)) and result.dropped == frozenset()


def test_masked_sum_minus_self_masks_equals_encoded_sum_exactly():
    vectors = random_vectors(6, 500, seed=3)
    run = run_round(vectors)
    threshold = run["server"].threshold

    masked_total = np.sum(np.stack(list(run["masked"].values())), axis=0, dtype=np.uint64) % 2**32
    self_masks = sum(
        expand_mask(rebuild_secret(run["reveals"], "b", u, threshold), 500).astype(np.uint64) for u in vectors
    )
    encoded = sum(encode_fixed_point(v, scale_bits=DEFAULT_SCALE_BITS, clip=16.0).astype(np.uint64)
                  for v in vectors.values())

    np.testing.assert_array_equal((masked_total - self_masks) % 2**32, encoded % 2**32)
    assert not np.array_equal(masked_total, encoded % 2**32)


def test_secure_sum_at_largest_allowed_range_does_not_wrap():
    # 3 * ceil(10922 * 2^16) = 2147352576 <= 2^31 - 1 < 4 * ...: three clients fit, four do not.
    clip = 10922.0
    for sign in (1.0, -1.0):
        result = secure_sum({i: np.full(4, sign * clip) for i in range(3)}, clip=clip, threshold=3)
        np.testing.assert_array_equal(result.sum, np.full(4, sign * 3 * clip))
    with pytest.raises(SecureAggregationConfigError, match="can wrap"):
        secure_sum({i: np.zeros(4) for i in range(4)}, clip=clip)


def test_secure_sum_of_100_clients_with_10000_values():
    vectors = random_vectors(100, 10_000, seed=4)

    result = secure_sum(vectors)

    assert np.max(np.abs(result.sum - sum(vectors.values()))) <= 100 * TOLERANCE_PER_CLIENT * (1 + 1e-9)
    assert 1.0 < result.upload_overhead < result.overhead


# ------------------------------------------------------------------ hiding

def test_one_masked_input_looks_uniform_and_uncorrelated_with_the_input():
    d = 100_000
    structured = np.linspace(-16.0, 16.0, d)
    vectors = {0: structured, 1: np.zeros(d), 2: np.ones(d)}
    run = run_round(vectors, seed=0)  # seeded keys: the same masking maths, and no 1-in-1000 flake
    masked = run["masked"][0]

    assert uniformity_p_value(masked) > 0.001
    top_bits = np.bincount(masked >> 24, minlength=256)
    assert stats.chisquare(top_bits).pvalue > 0.001
    assert abs(np.corrcoef(masked.astype(np.float64), structured)[0, 1]) < 0.02
    # Without the masks the same checks fail: they are not vacuous.
    encoded = encode_fixed_point(structured, scale_bits=DEFAULT_SCALE_BITS, clip=16.0)
    assert uniformity_p_value(encoded) < 1e-6
    assert abs(np.corrcoef(encoded.astype(np.float64), structured)[0, 1]) > 0.5


def test_same_input_masked_in_two_rounds_looks_unrelated():
    d = 100_000
    vectors = {0: np.full(d, 3.25), 1: np.zeros(d), 2: np.zeros(d)}

    first = run_round(vectors, seed=20)["masked"][0]
    second = run_round(vectors, seed=21)["masked"][0]

    assert np.mean(first == second) < 1e-3
    assert abs(np.corrcoef(first.astype(np.float64), second.astype(np.float64))[0, 1]) < 0.02
    assert uniformity_p_value(first - second) > 0.001


# ---------------------------------------------------------------- dropouts

def test_dropouts_before_input_leave_the_sum_of_the_survivors():
    vectors = random_vectors(9, 300, seed=5)

    result = secure_sum(vectors, drop_before_input=[1, 4, 7], seed=5)

    assert result.survivors == frozenset({0, 2, 3, 5, 6, 8}) and result.dropped == frozenset({1, 4, 7})
    expected = sum(vectors[i] for i in result.survivors)
    assert np.max(np.abs(result.sum - expected)) <= 6 * TOLERANCE_PER_CLIENT * (1 + 1e-9)


def test_dropouts_after_input_leave_the_sum_of_all():
    vectors = random_vectors(9, 300, seed=6)

    result = secure_sum(vectors, drop_after_input=[0, 4, 8], seed=6)

    assert result.survivors == frozenset(range(9))
    assert np.max(np.abs(result.sum - sum(vectors.values()))) <= 9 * TOLERANCE_PER_CLIENT * (1 + 1e-9)


def test_dropouts_on_both_sides_of_the_input():
    vectors = random_vectors(9, 300, seed=7)

    result = secure_sum(vectors, drop_before_input=[2, 3], drop_after_input=[5], seed=7)

    expected = sum(vectors[i] for i in range(9) if i not in (2, 3))
    assert np.max(np.abs(result.sum - expected)) <= 7 * TOLERANCE_PER_CLIENT * (1 + 1e-9)


@pytest.mark.parametrize("when", ["drop_before_input", "drop_after_input"])
def test_more_dropouts_than_the_threshold_allows_abort(when):
    vectors = random_vectors(9, 50, seed=8)
    assert default_threshold(9) == 6

    with pytest.raises(SecureAggregationAborted, match=r"only 5 of 9 clients .*threshold 6"):
        secure_sum(vectors, **{when: [0, 1, 2, 3]})


# ------------------------------------------------------------- share privacy

def test_server_never_sees_a_plaintext_share_or_secret():
    vectors = random_vectors(6, 20, seed=9)
    run = run_round(vectors, drop_before=[5])
    relayed = [ct for per_recipient in run["routed"].values() for ct in per_recipient.values()]
    revealed = [share for reveal in run["reveals"].values() for kind in reveal.values() for share in kind.values()]
    secrets_ = [client._s_key.private_bytes_raw() for client in run["clients"].values()]
    secrets_ += [client._self_seed for client in run["clients"].values()]

    assert len(relayed) == 6 * 5 and revealed
    for ciphertext in relayed:
        assert len(ciphertext) == 2 * 66 + 16
        for plain in revealed + secrets_:
            assert plain not in ciphertext
    # The revealed s_sk shares do rebuild the dropped client's key: the shares were real.
    s_key = rebuild_secret(run["reveals"], "s_sk", 5, run["server"].threshold)
    assert s_key == run["clients"][5]._s_key.private_bytes_raw()


def test_shares_routed_to_the_wrong_client_do_not_decrypt():
    vectors = random_vectors(4, 10, seed=10)
    clients = {c: SecAggClient(c, threshold=3, n_clients=4) for c in vectors}
    keys = {c: client.advertise_keys() for c, client in clients.items()}
    shares = {c: client.share_keys(keys) for c, client in clients.items()}
    for_client_1 = {u: shares[u][1] for u in (0, 2, 3)}
    for_client_2 = {u: shares[u][2] for u in (0, 1, 3)}
    wrong = {0: for_client_1[0], 1: for_client_2[1], 3: for_client_2[3]}  # 0's share for 1, handed to 2

    with pytest.raises(SecureAggregationProtocolError, match="cannot decrypt the shares from client 0"):
        clients[2].masked_input(vectors[2], wrong)
    tampered = dict(for_client_1)
    tampered[3] = bytes([tampered[3][0] ^ 1]) + tampered[3][1:]
    with pytest.raises(SecureAggregationProtocolError, match="cannot decrypt the shares from client 3"):
        clients[1].masked_input(vectors[1], tampered)


def test_client_refuses_to_reveal_both_shares_of_a_peer():
    vectors = random_vectors(4, 10, seed=11)
    clients = {c: SecAggClient(c, threshold=3, n_clients=4) for c in vectors}
    keys = {c: client.advertise_keys() for c, client in clients.items()}
    shares = {c: client.share_keys(keys) for c, client in clients.items()}
    clients[0].masked_input(vectors[0], {u: shares[u][0] for u in (1, 2, 3)})

    with pytest.raises(SecureAggregationProtocolError, match=r"\[3\] listed as both survivor and dropped"):
        clients[0].unmask({0, 1, 2, 3}, {3})


def test_client_phases_run_in_order_once():
    client = SecAggClient(0, threshold=2, n_clients=2)
    with pytest.raises(SecureAggregationProtocolError, match="expecting advertise_keys"):
        client.unmask({0, 1}, set())
    client.advertise_keys()
    with pytest.raises(SecureAggregationProtocolError, match="expecting share_keys"):
        client.advertise_keys()


# ------------------------------------------------------------ fixed point

def test_range_that_can_wrap_is_rejected_with_advice():
    with pytest.raises(SecureAggregationConfigError, match=r"100 clients .* use scale_bits <= 14"):
        SecAggServer(range(100), vector_length=4, scale_bits=16, clip=1000.0)


def test_value_outside_clip_is_rejected():
    with pytest.raises(SecureAggregationConfigError, match=r"value 17.0 at index 2 outside \+-16"):
        secure_sum({0: np.array([0.0, 1.0, 17.0]), 1: np.zeros(3)})


@pytest.mark.parametrize("threshold", [1, 2, 7])
def test_threshold_must_be_a_majority_and_at_most_n(threshold):
    with pytest.raises(SecureAggregationConfigError, match="threshold"):
        SecAggServer(range(6), vector_length=3, threshold=threshold)


# ------------------------------------------------------------------ Shamir

def test_any_t_shares_rebuild_the_secret_and_t_minus_1_do_not():
    rng = np.random.default_rng(12)
    secret = int.from_bytes(rng.bytes(32), "big")
    shares = shamir_split(secret, threshold=5, xs=range(1, 8))

    for subset in itertools.combinations(shares, 5):
        assert shamir_combine({x: shares[x] for x in subset}) == secret
    assert shamir_combine(shares) == secret
    for subset in itertools.combinations(shares, 4):
        wrong = shamir_combine({x: shares[x] for x in subset})
        assert wrong != secret and 0 <= wrong < PRIME


# --------------------------------------------------------------- FedAvg use

LIKE = {"linear.weight": np.zeros((3, 4), np.float32), "linear.bias": np.zeros(4, np.float32)}


def random_updates(counts, seed):
    rng = np.random.default_rng(seed)
    return [
        Update(arrays={k: rng.normal(0, 0.1, v.shape).astype(np.float32) for k, v in LIKE.items()},
               num_examples=n, site=f"site-{i}")
        for i, n in enumerate(counts)
    ]


def weighted_mean(updates):
    total = sum(u.num_examples for u in updates)
    return sum(u.num_examples * arrays_flatten(u.arrays).astype(np.float64) for u in updates) / total


def test_secure_fedavg_change_is_the_example_weighted_mean():
    updates = random_updates([5, 50, 500, 7, 1200], seed=13)

    change, result = secure_fedavg_change(updates, LIKE, seed=13)

    assert list(change) == list(LIKE) and change["linear.weight"].shape == (3, 4)
    np.testing.assert_allclose(arrays_flatten(change), weighted_mean(updates), atol=1e-6)
    assert result.sum[-1] == pytest.approx(5 + 50 + 500 + 7 + 1200)


def test_secure_fedavg_change_with_dropouts_averages_the_survivors():
    updates = random_updates([10, 20, 30, 40, 50, 60], seed=14)

    change, result = secure_fedavg_change(updates, LIKE, drop_before_input=[1], seed=14)

    survivors = [updates[i] for i in sorted(result.survivors)]
    np.testing.assert_allclose(arrays_flatten(change), weighted_mean(survivors), atol=1e-6)


class _Median(Strategy):
    name = "median"

    def combine(self, updates):
        raise AssertionError("never called")


class _Mean(_Median):
    name = "mean"
    weighted_mean = True


def test_strategy_that_needs_updates_in_the_clear_is_refused():
    with pytest.raises(SecureAggregationUnsupported, match="'median'.*in the clear"):
        check_strategy(_Median())
    with pytest.raises(SecureAggregationUnsupported):
        secure_fedavg_change(random_updates([1, 2], seed=0), LIKE, strategy=_Median())
    check_strategy(_Mean())


# ---------------------------------------------------------- differential privacy

def test_clip_bounds_every_norm_and_leaves_small_updates_alone():
    rng = np.random.default_rng(15)
    dp = DifferentialPrivacy(clip_norm=1.0, noise_multiplier=1.0)
    for scale in [1e-4, 0.01, 0.05, 1.0, 30.0, 1e4]:
        arrays = {k: (scale * rng.normal(size=v.shape)).astype(np.float32) for k, v in LIKE.items()}
        update = Update(arrays=arrays, num_examples=321, metrics={"loss": 0.5}, site="a", base_version=3)
        norm = arrays_norm(arrays)

        clipped = dp.clip(update)

        assert arrays_norm(clipped.arrays) <= 1.0
        assert clipped.num_examples == 1 and clipped.site == "a" and clipped.base_version == 3
        assert clipped.metrics == {"loss": 0.5, "update_norm": pytest.approx(norm)}
        if norm <= 1.0:
            for k in arrays:
                np.testing.assert_array_equal(clipped.arrays[k], arrays[k])
        else:
            assert arrays_norm(clipped.arrays) == pytest.approx(1.0, rel=1e-5)
            cosine = np.dot(arrays_flatten(clipped.arrays), arrays_flatten(arrays)) / norm
            assert cosine == pytest.approx(1.0, rel=1e-5)


def test_site_noise_sums_to_std_sigma_c_over_the_sites():
    dp = DifferentialPrivacy(clip_norm=2.0, noise_multiplier=1.5)
    rng = np.random.default_rng(16)
    zero = dp.clip(Update(arrays={"w": np.zeros(20_000, np.float32)}, num_examples=40))
    m = 10

    total = sum(dp.site_noise(zero, m, rng).arrays["w"].astype(np.float64) for _ in range(m))

    assert np.std(total) == pytest.approx(1.5 * 2.0, rel=0.05)
    assert np.std(total / m) == pytest.approx(dp.mean_noise_std(m), rel=0.05)
    assert abs(np.mean(total)) < 0.1


def test_coordinator_noise_has_std_sigma_c():
    dp = DifferentialPrivacy(clip_norm=0.5, noise_multiplier=2.0, mode="coordinator")

    noisy = dp.coordinator_noise({"w": np.zeros(20_000, np.float32)}, np.random.default_rng(17))

    assert np.std(noisy["w"]) == pytest.approx(1.0, rel=0.05)


def test_site_noise_refuses_unclipped_updates_and_the_wrong_mode():
    dp = DifferentialPrivacy(clip_norm=1.0, noise_multiplier=1.0)
    rng = np.random.default_rng(18)
    with pytest.raises(PrivacyInputError, match="call clip"):
        dp.site_noise(Update(arrays={"w": np.full(4, 3.0, np.float32)}, num_examples=1), 5, rng)
    with pytest.raises(PrivacyInputError, match="call clip"):
        dp.site_noise(Update(arrays={"w": np.zeros(4, np.float32)}, num_examples=12), 5, rng)
    with pytest.raises(PrivacyConfigError, match="mode"):
        dp.coordinator_noise({"w": np.zeros(4, np.float32)}, rng)


def test_effective_noise_multiplier_when_sites_drop_out():
    dp = DifferentialPrivacy(clip_norm=1.0, noise_multiplier=2.0)
    assert dp.effective_noise_multiplier(10, 10) == 2.0
    assert dp.effective_noise_multiplier(4, 16) == pytest.approx(1.0)


def test_accountant_epsilon_matches_opacus_rdp():
    accountant = PrivacyAccountant()
    reference = RDPAccountant()
    for _ in range(30):
        accountant.step(1.1, 0.1)
        reference.step(noise_multiplier=1.1, sample_rate=0.1)
    for _ in range(20):
        accountant.step(0.8, 0.25)
        reference.step(noise_multiplier=0.8, sample_rate=0.25)

    assert accountant.rounds == 50
    assert accountant.epsilon(1e-5) == pytest.approx(reference.get_epsilon(delta=1e-5), rel=1e-12)
    fresh = RDPAccountant()
    for _ in range(40):
        fresh.step(noise_multiplier=1.3, sample_rate=0.2)
    assert epsilon_for(1.3, 0.2, 40, 1e-5) == pytest.approx(fresh.get_epsilon(delta=1e-5), rel=1e-12)


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    by_steps = [epsilon_for(1.0, 0.1, steps, 1e-5) for steps in (1, 10, 100, 1000)]
    by_sigma = [epsilon_for(sigma, 0.1, 100, 1e-5) for sigma in (0.7, 1.0, 2.0, 4.0)]

    assert by_steps == sorted(by_steps) and len(set(by_steps)) == 4
    assert by_sigma == sorted(by_sigma, reverse=True) and len(set(by_sigma)) == 4
    assert epsilon_for(1.0, 0.1, 0, 1e-5) == 0.0 and PrivacyAccountant().epsilon(1e-5) == 0.0


@pytest.mark.parametrize(
    ("make", "names"),
    [
        (lambda: DifferentialPrivacy(clip_norm=0.0, noise_multiplier=1.0), "clip_norm"),
        (lambda: DifferentialPrivacy(clip_norm=1.0, noise_multiplier=0.0), "noise_multiplier"),
        (lambda: DifferentialPrivacy(clip_norm=1.0, noise_multiplier=math.nan), "noise_multiplier"),
        (lambda: DifferentialPrivacy(clip_norm=1.0, noise_multiplier=1.0, delta=1.0), "delta"),
        (lambda: DifferentialPrivacy(clip_norm=1.0, noise_multiplier=1.0, mode="server"), "mode"),
        (lambda: PrivacyAccountant().step(-1.0, 0.1), "noise_multiplier"),
        (lambda: PrivacyAccountant().step(1.0, 0.0), "sample_rate"),
        (lambda: PrivacyAccountant().step(1.0, 1.5), "sample_rate"),
        (lambda: PrivacyAccountant().epsilon(0.0), "delta"),
        (lambda: epsilon_for(1.0, 0.1, -1, 1e-5), "steps"),
    ],
)
def test_bad_privacy_config_names_the_value(make, names):
    with pytest.raises(PrivacyConfigError, match=names):
        make()
