"""Agreement, throughput, skip rate and the benchmark baseline: hand-computed values, sklearn cross-checks."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest
from sklearn.metrics import cohen_kappa_score

from annotate.metrics.quality import (
    UNDEFINED_ONE_CATEGORY,
    agreement_summary,
    cohen_kappa,
    fleiss_kappa,
    pairwise_cohen_kappa,
    skip_rate,
    throughput,
)
from learners.baselines import random_baseline

# --- Cohen's kappa ----------------------------------------------------------


def test_cohen_kappa_two_categories_by_hand():
    # 10 items. Both "yes": 4; a yes, b no: 2; a no, b yes: 1; both "no": 3.
    # p_o = (4 + 3) / 10 = 0.7
    # a says yes 6 times, b 5 times: p_e = 0.6 * 0.5 + 0.4 * 0.5 = 0.5
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    a = ["yes"] * 4 + ["yes"] * 2 + ["no"] * 1 + ["no"] * 3
    b = ["yes"] * 4 + ["no"] * 2 + ["yes"] * 1 + ["no"] * 3
    kappa = cohen_kappa(a, b)
    assert kappa.value == pytest.approx(0.4)
    assert kappa.observed == pytest.approx(0.7) and kappa.expected == pytest.approx(0.5) and kappa.items == 10
    assert kappa.value == pytest.approx(cohen_kappa_score(a, b))


def test_cohen_kappa_three_categories_by_hand():
    # Agree on items 0, 2, 3, 4: p_o = 4/6 = 2/3.
    # a: c1 2, c2 2, c3 2; b: c1 2, c2 3, c3 1 -> p_e = (2*2 + 2*3 + 2*1) / 6^2 = 12/36 = 1/3
    # kappa = (2/3 - 1/3) / (1 - 1/3) = 0.5
    a = ["c1", "c1", "c2", "c2", "c3", "c3"]
    b = ["c1", "c2", "c2", "c2", "c3", "c1"]
    assert cohen_kappa(a, b).value == pytest.approx(0.5)
    assert cohen_kappa(a, b).value == pytest.approx(cohen_kappa_score(a, b))


@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_matches_sklearn_on_random_labels(seed):
    import random

    rng = random.Random(seed)
    a = [rng.choice("abcd") for _ in range(60)]
    b = [x if rng.random() < 0.6 else rng.choice("abcd") for x in a]
    assert cohen_kappa(a, b).value == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)


def test_cohen_kappa_complete_disagreement_is_negative_not_undefined():
    # p_o = 0; a is all x, b all y: p_e = 0 -> kappa = 0. x/y alternating against y/x: p_e = .5 -> -1.
    assert cohen_kappa(["x", "x"], ["y", "y"]).value == pytest.approx(0.0)
    assert cohen_kappa(["x", "y"], ["y", "x"]).value == pytest.approx(-1.0)
    assert cohen_kappa(["x", "y"], ["y", "x"]).value == pytest.approx(cohen_kappa_score(["x", "y"], ["y", "x"]))


def test_cohen_kappa_one_category_everywhere_is_undefined_with_observed_agreement():
    kappa = cohen_kappa(["cat"] * 5, ["cat"] * 5)
    assert kappa.value is None and kappa.observed == 1.0 and kappa.reason == UNDEFINED_ONE_CATEGORY


def test_cohen_kappa_without_pairs_says_why():
    kappa = cohen_kappa([], [])
    assert kappa.value is None and kappa.items == 0 and "both" in kappa.reason


def test_cohen_kappa_rejects_unpaired_labels():
    with pytest.raises(ValueError, match="paired"):
        cohen_kappa(["a", "b"], ["a"])


# --- Fleiss' kappa ----------------------------------------------------------

# Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters each, 5 categories.
FLEISS_1971 = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_worked_example_by_hand():
    # n = 14, n(n-1) = 182. Sums of squares per row: 196, 60, 70, 94, 74, 98, 58, 46, 66, 66;
    # minus n: 182, 46, 56, 80, 60, 84, 44, 32, 52, 52 -> total 688, so P-bar = 688 / (10 * 182) = 0.37802.
    # Column totals 20, 28, 39, 21, 32 of N n = 140 ratings:
    # P_e = (20^2 + 28^2 + 39^2 + 21^2 + 32^2) / 140^2 = 4170 / 19600 = 0.21276.
    # kappa = (P-bar - P_e) / (1 - P_e) = 0.20993 (Wikipedia: 0.210).
    p_bar = Fraction(688, 1820)
    p_e = Fraction(4170, 19600)
    expected = (p_bar - p_e) / (1 - p_e)
    kappa = fleiss_kappa(FLEISS_1971)
    assert kappa.value == pytest.approx(float(expected), abs=1e-12)
    assert kappa.value == pytest.approx(0.210, abs=5e-4)
    assert kappa.observed == pytest.approx(float(p_bar)) and kappa.expected == pytest.approx(float(p_e))
    assert kappa.items == 10


def test_fleiss_kappa_small_table_by_hand():
    # 4 items, 3 raters, 2 categories: [3,0], [2,1], [1,2], [0,3].
    # P_i = (sum n_ij^2 - 3) / 6: (9-3)/6 = 1, (4+1-3)/6 = 1/3, 1/3, 1 -> P-bar = (8/3) / 4 = 2/3.
    # p = (6/12, 6/12) -> P_e = 1/2. kappa = (2/3 - 1/2) / (1/2) = 1/3.
    assert fleiss_kappa([[3, 0], [2, 1], [1, 2], [0, 3]]).value == pytest.approx(1 / 3)


def test_fleiss_kappa_one_category_everywhere_is_undefined():
    kappa = fleiss_kappa([[2, 0], [2, 0], [2, 0]])
    assert kappa.value is None and kappa.observed == 1.0 and kappa.reason == UNDEFINED_ONE_CATEGORY


def test_fleiss_kappa_without_items_says_why():
    kappa = fleiss_kappa([])
    assert kappa.value is None and kappa.items == 0 and "two or more" in kappa.reason


def test_fleiss_kappa_rejects_unequal_rater_counts():
    with pytest.raises(ValueError, match="same number of ratings"):
        fleiss_kappa([[2, 0], [1, 2]])


# --- pairs and the summary --------------------------------------------------

RATINGS = {
    1: {"u1": "a", "u2": "a", "u3": "b"},
    2: {"u1": "b", "u2": "b"},
    3: {"u1": "a", "u3": "a"},
    4: {"u2": "a"},  # one rater: no pair, no Fleiss
}


def test_pairwise_cohen_kappa_uses_the_items_both_labelled():
    pairs = {(p.annotator_a, p.annotator_b): p.kappa for p in pairwise_cohen_kappa(RATINGS)}
    # u1/u2 on items 1, 2: (a, a), (b, b): p_o = 1, p_e = (1*1 + 1*1)/4 = 1/2 -> kappa 1.
    assert pairs[("u1", "u2")].value == pytest.approx(1.0) and pairs[("u1", "u2")].items == 2
    # u1/u3 on items 1, 3: (a, b), (a, a): p_o = 1/2; u1 a a, u3 b a -> p_e = (2*1)/4 = 1/2 -> kappa 0.
    assert pairs[("u1", "u3")].value == pytest.approx(0.0)
    assert pairs[("u1", "u3")].value == pytest.approx(cohen_kappa_score(["a", "a"], ["b", "a"]))
    # u2/u3 on item 1 only: (a, b): p_o = 0, p_e = 0 -> kappa 0.
    assert pairs[("u2", "u3")].value == pytest.approx(0.0) and pairs[("u2", "u3")].items == 1
    assert len(pairs) == 3


def test_agreement_summary_uses_the_most_common_rater_count_for_fleiss():
    summary = agreement_summary(RATINGS, ["a", "b"])
    # Items 2 and 3 have 2 raters, item 1 has 3: Fleiss over [[0, 2], [2, 0]] (n = 2); item 1 left out.
    # P_i = (4 - 2)/2 = 1 each -> P-bar = 1; p = (1/2, 1/2) -> P_e = 1/2; kappa = 1.
    assert summary.raters_per_item == 2 and summary.overlapped_items == 3 and summary.items_left_out == 1
    assert summary.fleiss.value == pytest.approx(1.0) and summary.fleiss.items == 2
    assert len(summary.pairs) == 3


def test_agreement_summary_without_overlap_says_why():
    summary = agreement_summary({1: {"u1": "a"}, 2: {"u2": "b"}}, ["a", "b"])
    assert summary.fleiss.value is None and summary.fleiss.reason and summary.pairs == []
    assert summary.overlapped_items == 0 and summary.raters_per_item is None


# --- throughput ---------------------------------------------------------------

T0 = datetime(2026, 3, 2, 10, 0, 0, tzinfo=timezone.utc)


def test_throughput_splits_sessions_at_breaks_by_hand():
    labels = [
        (T0, 20.0),
        (T0 + timedelta(seconds=30), 25.0),
        (T0 + timedelta(seconds=70), 35.0),
        (T0 + timedelta(seconds=70 + 600), 50.0),  # a 10-minute break: a new session
        (T0 + timedelta(seconds=70 + 600 + 60), 45.0),
    ]
    result = throughput(list(reversed(labels)))  # order of the input does not matter
    # Session 1: first item's 20 s + gaps 30 + 40 = 90 s. Session 2: first item's 50 s + gap 60 = 110 s.
    # Active 200 s; 5 labels / 200 s * 3600 = 90 labels per hour.
    assert result.active_seconds == pytest.approx(200.0) and result.sessions == 2
    assert result.labels_per_hour == pytest.approx(90.0)
    # Median of 20, 25, 35, 45, 50.
    assert result.median_seconds == pytest.approx(35.0)


def test_throughput_caps_the_first_item_and_ignores_unknown_seconds_in_the_median():
    labels = [(T0, 1000.0), (T0 + timedelta(seconds=100), None), (T0 + timedelta(seconds=160), 30.0)]
    result = throughput(labels, break_seconds=300)
    # First item capped at 300 s, then gaps 100 + 60: 460 s; 3 / 460 * 3600 = 23.478 per hour.
    assert result.active_seconds == pytest.approx(460.0)
    assert result.labels_per_hour == pytest.approx(3 / 460 * 3600)
    # Median of the known 1000 and 30: 515.
    assert result.median_seconds == pytest.approx(515.0)


def test_throughput_of_one_label_with_unknown_time_is_undefined():
    result = throughput([(T0, None)])
    assert result.labels == 1 and result.labels_per_hour is None and result.median_seconds is None


def test_throughput_of_nobody():
    result = throughput([])
    assert result.labels == 0 and result.labels_per_hour is None and result.sessions == 0


# --- skip rate ------------------------------------------------------------------

def test_skip_rate_is_skipped_over_decided():
    assert skip_rate(3, 9) == pytest.approx(0.25)  # 3 / (3 + 9)
    assert skip_rate(0, 4) == 0.0
    assert skip_rate(0, 0) is None


def test_skip_rate_rejects_negative_counts():
    with pytest.raises(ValueError):
        skip_rate(-1, 2)


# --- the benchmark's random baseline -----------------------------------------

def test_random_baseline_reads_the_committed_benchmark():
    from django.conf import settings

    results = json.loads((settings.BASE_DIR / "bench" / "active_learning" / "results.json").read_text())
    summary = results["summary"]["digits"]
    baseline = random_baseline("digits")
    assert baseline is not None
    assert baseline.labels == summary["labels"]
    assert baseline.accuracy == summary["arms"]["random"]["curve_mean"]
    assert baseline.accuracy_std == summary["arms"]["random"]["curve_std"]
    assert baseline.estimator == "logistic_regression" and baseline.featuriser == "image_pixels"


def test_random_baseline_is_none_for_an_unknown_or_empty_dataset():
    assert random_baseline("no_such_dataset") is None
    assert random_baseline("") is None


def test_random_baseline_is_none_without_the_results_file(tmp_path):
    assert random_baseline("digits", path=tmp_path / "results.json") is None


def test_random_baseline_reads_a_given_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({
        "date": "2026-01-01T00:00:00+00:00",
        "datasets": {"toy": {"title": "Toy", "featuriser": "tabular"}},
        "summary": {"toy": {"labels": [2, 4], "seeds": [0, 1], "arms": {
            "random": {"estimator": "logistic_regression", "seeds": 2, "curve_mean": [0.5, 0.75],
                       "curve_std": [0.1, 0.05]},
            "margin": {"estimator": "logistic_regression", "seeds": 2, "curve_mean": [0.5, 0.9],
                       "curve_std": [0.1, 0.0]},
        }}},
    }))
    baseline = random_baseline("toy", path=path)
    assert baseline.labels == [2, 4] and baseline.accuracy == [0.5, 0.75] and baseline.accuracy_std == [0.1, 0.05]
    assert baseline.title == "Toy" and baseline.seeds == 2
    assert random_baseline("toy", path=path, arm="kcenter") is None
