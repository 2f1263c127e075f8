"""Agreement, throughput and skip rate of annotators: pure functions over plain values (no Django).

Conventions shared by every function here:

- A kappa is returned as a `Kappa` with the value, the observed and the chance
  agreement, and the number of items it rests on. When it cannot be computed
  the value is None and `reason` says why; it is never NaN and never a number
  made up to fill the gap.
- When every rating of every item falls in one single category, chance
  agreement is 1 and kappa is 0/0. We return None ("undefined") rather than
  1.0: kappa measures agreement *beyond chance*, and with one category in use
  there is no evidence either way (two annotators who press the same key on
  every item would score 1.0 without having read anything). The observed
  agreement (1.0 in that case) is still reported. (The stopping signal in
  `learners.services.stopping` does map this case to 1.0 on purpose: there the
  question is "did the model's predictions change", and unchanged is the answer.)
"""
from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import combinations

# A pause longer than this between two labels is a break, not work (see `throughput`).
BREAK_SECONDS = 300.0

UNDEFINED_ONE_CATEGORY = "every rating is the same category: chance agreement is 1, so kappa is undefined"


@dataclass(frozen=True)
class Kappa:
    value: float | None
    observed: float | None  # proportion of agreement (Cohen) or mean pairwise agreement per item (Fleiss)
    expected: float | None  # agreement expected by chance
    items: int
    reason: str = ""


def _kappa(observed: float, expected: float, items: int) -> Kappa:
    if expected >= 1.0 - 1e-12:
        return Kappa(None, observed, expected, items, UNDEFINED_ONE_CATEGORY)
    return Kappa((observed - expected) / (1.0 - expected), observed, expected, items)


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> Kappa:
    """Cohen's kappa of two raters over paired labels: a[i] and b[i] rate the same item i.

    kappa = (p_o - p_e) / (1 - p_e), with p_o the share of items on which they
    agree and p_e = sum over categories c of (share of a's labels that are c) x
    (share of b's labels that are c). None with a reason when there are no
    pairs or p_e is 1 (one category only, see the module docstring).
    """
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa needs paired labels; got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return Kappa(None, None, None, 0, "no item was labelled by both annotators")
    observed = sum(x == y for x, y in zip(a, b)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    return _kappa(observed, expected, n)


def fleiss_kappa(counts: Sequence[Sequence[int]]) -> Kappa:
    """Fleiss' kappa from an items x categories matrix of rating counts.

    counts[i][j] is how many raters put item i in category j. Every item must
    have the same number of ratings n >= 2 (the classic Fleiss 1971 setting);
    a ValueError says which row differs. The caller decides which items enter:
    `agreement_summary` keeps the items whose rater count is the most common
    one and reports how many it left out.

    P_i = (sum_j n_ij^2 - n) / (n (n - 1)), P-bar = mean of P_i,
    p_j = sum_i n_ij / (N n), P_e = sum_j p_j^2, kappa = (P-bar - P_e) / (1 - P_e).
    """
    rows = [list(r) for r in counts]
    if not rows:
        return Kappa(None, None, None, 0, "no item was labelled by two or more annotators")
    n = sum(rows[0])
    for i, row in enumerate(rows):
        if any(c < 0 for c in row):
            raise ValueError(f"row {i} has a negative count: {row}")
        if sum(row) != n:
            raise ValueError(f"every item needs the same number of ratings; row 0 has {n}, row {i} has {sum(row)}")
    if n < 2:
        return Kappa(None, None, None, len(rows), "each item has fewer than two ratings")
    items = len(rows)
    observed = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in rows) / items
    totals = [sum(col) for col in zip(*rows)]
    expected = sum((t / (items * n)) ** 2 for t in totals)
    return _kappa(observed, expected, items)


@dataclass(frozen=True)
class PairKappa:
    annotator_a: Hashable
    annotator_b: Hashable
    kappa: Kappa


def pairwise_cohen_kappa(ratings: Mapping[Hashable, Mapping[Hashable, Hashable]]) -> list[PairKappa]:
    """Cohen's kappa for every pair of annotators on the items both labelled.

    `ratings` maps item -> {annotator: label}. Pairs that share no item are
    left out (there is nothing to compare). Sorted by annotator keys.
    """
    shared: dict[tuple, tuple[list, list]] = {}
    for by_annotator in ratings.values():
        for x, y in combinations(sorted(by_annotator), 2):
            a, b = shared.setdefault((x, y), ([], []))
            a.append(by_annotator[x])
            b.append(by_annotator[y])
    return [PairKappa(x, y, cohen_kappa(a, b)) for (x, y), (a, b) in sorted(shared.items())]


@dataclass(frozen=True)
class Agreement:
    fleiss: Kappa
    raters_per_item: int | None  # the n of the items that entered Fleiss' kappa
    overlapped_items: int  # items with ratings from two or more annotators
    items_left_out: int  # overlapped items whose rater count differs from raters_per_item
    pairs: list[PairKappa]


def agreement_summary(
    ratings: Mapping[Hashable, Mapping[Hashable, Hashable]], categories: Sequence[Hashable]
) -> Agreement:
    """Fleiss' kappa and pairwise Cohen's kappa over the items rated by two or more annotators.

    Fleiss' kappa needs one rater count n for all items: we use the count that
    most overlapped items have (the larger one on a tie), which is the project's
    overlap unless it was changed while labelling, and leave the other items
    out of Fleiss (they still count in the pairwise kappas). Labels not in
    `categories` are counted as extra categories rather than dropped.
    """
    overlapped = {item: r for item, r in ratings.items() if len(r) >= 2}
    pairs = pairwise_cohen_kappa(overlapped)
    if not overlapped:
        return Agreement(fleiss_kappa([]), None, 0, 0, pairs)
    sizes = Counter(len(r) for r in overlapped.values())
    n = max(sizes, key=lambda size: (sizes[size], size))
    columns = list(dict.fromkeys(list(categories) + sorted(
        {label for r in overlapped.values() for label in r.values()} - set(categories), key=str)))
    index = {c: j for j, c in enumerate(columns)}
    matrix = []
    for r in overlapped.values():
        if len(r) != n:
            continue
        row = [0] * len(columns)
        for label in r.values():
            row[index[label]] += 1
        matrix.append(row)
    return Agreement(fleiss_kappa(matrix), n, len(overlapped), len(overlapped) - len(matrix), pairs)


@dataclass(frozen=True)
class Throughput:
    labels: int
    active_seconds: float
    labels_per_hour: float | None
    median_seconds: float | None  # median of the per-item `seconds` (serving to labelling)
    sessions: int


def throughput(
    labels: Iterable[tuple[datetime, float | None]], *, break_seconds: float = BREAK_SECONDS
) -> Throughput:
    """Labels per hour of active time, and the median seconds per item, of one annotator.

    `labels` are (created_at, seconds) of the annotator's labels, `seconds`
    being the time from serving the item to labelling it (None if unknown).

    Active time is the time spent at work, breaks excluded: the labels, in
    time order, are split into sessions wherever two consecutive labels are
    more than `break_seconds` apart; a session lasts from its first label to
    its last, plus the first label's own `seconds` (capped at `break_seconds`;
    0 if unknown), the time spent on it before it was labelled. Labels per
    hour = labels / sum of session lengths x 3600. Time on skipped items and
    page loads inside a session counts as work; a pause longer than the
    threshold counts as nothing. None when the active time is 0 (a single
    label with unknown seconds).

    The median of `seconds` is over the labels where it is known.
    """
    rows = sorted(labels, key=lambda row: row[0])
    if not rows:
        return Throughput(0, 0.0, None, None, 0)
    active, sessions, previous = 0.0, 0, None
    for created_at, seconds in rows:
        gap = None if previous is None else (created_at - previous).total_seconds()
        if gap is not None and gap <= break_seconds:
            active += gap
        else:
            sessions += 1
            active += min(seconds or 0.0, break_seconds)
        previous = created_at
    known = [s for _, s in rows if s is not None]
    return Throughput(
        labels=len(rows),
        active_seconds=active,
        labels_per_hour=len(rows) / active * 3600.0 if active > 0 else None,
        median_seconds=statistics.median(known) if known else None,
        sessions=sessions,
    )


def skip_rate(skipped: int, labelled: int) -> float | None:
    """Skipped / (skipped + labelled) assignments; None when neither happened yet.

    Leases still open or expired unanswered count in neither: the annotator has
    not decided about them.
    """
    if skipped < 0 or labelled < 0:
        raise ValueError(f"counts cannot be negative: skipped={skipped}, labelled={labelled}")
    decided = skipped + labelled
    return skipped / decided if decided else None
