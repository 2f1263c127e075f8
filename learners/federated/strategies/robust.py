"""Byzantine-robust aggregation: coordinate-wise median, trimmed mean and (Multi-)Krum.

These rules need every update in the clear at once (they sort or compare
them), so they neither stream nor run under secure aggregation. They ignore
``num_examples``: a malicious site can claim any count, and weighting by it would
let one liar outweigh every honest site, which is what the rules exist to stop.
"""
from __future__ import annotations

from typing import ClassVar, Iterable

import numpy as np

from learners.federated.strategies.base import Strategy, StrategyError
from learners.federated.strategies.fedavg import Parameters
from learners.federated.updates import Arrays, Update, arrays_check_like, arrays_flatten, arrays_unflatten


def updates_matrix(updates: Iterable[Update], what: str) -> tuple[np.ndarray, Arrays]:
    """The updates' changes as rows of a float32 matrix, and the first update's arrays as the shape.

    Raises
    ------
    StrategyError
        No updates.
    ArraysMismatch
        An update whose names or shapes differ from the first one's.
    """
    rows: list[np.ndarray] = []
    like: Arrays | None = None
    for update in updates:
        if like is None:
            like = update.arrays
        else:
            arrays_check_like(like, update.arrays, what=f"{what}: update from site {update.site!r}")
        rows.append(arrays_flatten(update.arrays))
    if like is None:
        raise StrategyError(f"{what}: no updates to combine")
    return np.stack(rows), like


class CoordinateMedian(Strategy):
    """Coordinate-wise median of the changes (Yin et al. 2018, "Byzantine-Robust
    Distributed Learning: Towards Optimal Statistical Rates").

    Each coordinate stays within the honest sites' range as long as fewer than
    half the sites are malicious. With an even number of updates, the mean of
    the two middle values (numpy's median).
    """

    name: ClassVar[str] = "median"
    weighted_mean: ClassVar[bool] = False
    PARAMETERS: ClassVar[Parameters] = {}

    def combine(self, updates: Iterable[Update]) -> Arrays:
        """The per-coordinate median of the updates' changes, num_examples ignored."""
        matrix, like = updates_matrix(updates, self.name)
        return arrays_unflatten(np.median(matrix, axis=0), like)


class TrimmedMean(Strategy):
    """Coordinate-wise trimmed mean (Yin et al. 2018).

    Per coordinate, drop the ``floor(trim_fraction * n)`` largest and as many
    smallest values, then average the rest. Tolerates that many malicious sites.

    Parameters
    ----------
    trim_fraction : float
        beta in [0, 0.5); 0 is the plain (unweighted) mean. Default 0.1: set it
        to at least the fraction of sites you expect to be malicious.
    """

    name: ClassVar[str] = "trimmed_mean"
    weighted_mean: ClassVar[bool] = False
    PARAMETERS: ClassVar[Parameters] = {"trim_fraction": (float, 0.1, "in [0, 0.5)")}

    def __init__(self, trim_fraction: float = 0.1) -> None:
        if not 0 <= trim_fraction < 0.5:
            raise StrategyError(f"trimmed_mean: trim_fraction {trim_fraction} must be in [0, 0.5)")
        self.trim_fraction = float(trim_fraction)

    def combine(self, updates: Iterable[Update]) -> Arrays:
        """The per-coordinate trimmed mean of the updates' changes, num_examples ignored."""
        matrix, like = updates_matrix(updates, self.name)
        n = matrix.shape[0]
        # floor keeps at least one value per coordinate: trim_fraction < 0.5 gives 2 * cut < n.
        cut = int(np.floor(self.trim_fraction * n))
        kept = np.sort(matrix, axis=0)[cut:n - cut]
        return arrays_unflatten(kept.mean(axis=0, dtype=np.float64), like)


class Krum(Strategy):
    """Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries:
    Byzantine Tolerant Gradient Descent").

    With f = `num_byzantine` sites assumed malicious among n, each update's score
    is the sum of squared L2 distances to its n - f - 2 nearest other updates;
    Krum returns the update with the lowest score, Multi-Krum the plain mean of
    the `multi` lowest-scoring ones. Needs n > 2f + 2.

    Parameters
    ----------
    num_byzantine : int
        f >= 0, the number of malicious sites to tolerate. Default 1.
    multi : int
        m >= 1 updates to average; 1 is Krum. At most n - f at combine time.
    """

    name: ClassVar[str] = "krum"
    weighted_mean: ClassVar[bool] = False
    PARAMETERS: ClassVar[Parameters] = {
        "num_byzantine": (int, 1, ">= 0, and updates per round > 2 * num_byzantine + 2"),
        "multi": (int, 1, ">= 1, and <= updates per round - num_byzantine"),
    }

    def __init__(self, num_byzantine: int = 1, multi: int = 1) -> None:
        if num_byzantine < 0:
            raise StrategyError(f"krum: num_byzantine {num_byzantine} must be >= 0")
        if multi < 1:
            raise StrategyError(f"krum: multi {multi} must be >= 1 (1 is plain Krum)")
        self.num_byzantine = int(num_byzantine)
        self.multi = int(multi)

    def scores(self, matrix: np.ndarray) -> np.ndarray:
        """Each row's Krum score: the sum of squared distances to its n - f - 2 nearest other rows."""
        n, f = matrix.shape[0], self.num_byzantine
        if n <= 2 * f + 2:
            raise StrategyError(
                f"krum: {n} updates are too few to tolerate num_byzantine={f}; "
                f"Krum needs more than 2 * {f} + 2 = {2 * f + 2}"
            )
        rows = matrix.astype(np.float64)
        # Row by row rather than through the Gram matrix, whose cancellation would blur near-equal updates.
        distances = np.stack([np.sum(np.square(rows - row), axis=1) for row in rows])
        np.fill_diagonal(distances, np.inf)
        nearest = np.sort(distances, axis=1)[:, :n - f - 2]
        return nearest.sum(axis=1)

    def combine(self, updates: Iterable[Update]) -> Arrays:
        """The lowest-scoring update's change (Krum) or the mean of the `multi` lowest (Multi-Krum).

        Raises
        ------
        StrategyError
            n <= 2 * num_byzantine + 2, or multi > n - num_byzantine.
        """
        matrix, like = updates_matrix(updates, self.name)
        n = matrix.shape[0]
        scores = self.scores(matrix)
        if self.multi > n - self.num_byzantine:
            raise StrategyError(
                f"krum: multi {self.multi} exceeds {n} updates - num_byzantine {self.num_byzantine}; "
                "averaging more would include at least one of the assumed malicious updates"
            )
        chosen = np.argsort(scores, kind="stable")[:self.multi]
        if self.multi == 1:
            return arrays_unflatten(matrix[chosen[0]], like)
        return arrays_unflatten(matrix[chosen].mean(axis=0, dtype=np.float64), like)
