"""Federated averaging (McMahan et al. 2017) and FedProx (Li et al. 2020).

Both combine the sites' changes into their example-weighted mean; FedProx only
adds a setting that local training reads.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterable, Mapping

import numpy as np

from learners.federated.strategies.base import Strategy, StrategyError
from learners.federated.updates import Arrays, Update, arrays_check_like

#: name -> (type, default, rule): what a form needs to validate a strategy's parameters.
Parameters = dict[str, tuple[type, Any, str]]


class WeightedSum:
    """A running sum of weighted arrays, kept in float64, one model's worth of memory.

    Updates are added one at a time and then dropped, so any number of them can
    be combined without holding more than the sum.

    Parameters
    ----------
    what : str
        The owner's name, used in error messages (``"fedavg"``, ``"region 'eu'"``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.sums: dict[str, np.ndarray] | None = None
        self.total_weight = 0.0
        self.count = 0

    def add(self, arrays: Mapping[str, np.ndarray], weight: float, *, site: str = "") -> None:
        """Add ``weight * arrays``; the first arrays added fix the names and shapes."""
        if self.sums is None:
            self.sums = {name: np.zeros(np.shape(value), dtype=np.float64) for name, value in arrays.items()}
        else:
            arrays_check_like(self.sums, arrays, what=f"{self.what}: update from site {site!r}")
        for name, value in arrays.items():
            self.sums[name] += weight * np.asarray(value, dtype=np.float64)
        self.total_weight += weight
        self.count += 1

    def scaled(self, divisor: float) -> Arrays:
        """The sum divided by `divisor`, as float32 arrays."""
        if self.sums is None:
            raise StrategyError(f"{self.what}: no updates to combine")
        return {name: (value / divisor).astype(np.float32) for name, value in self.sums.items()}

    def mean(self) -> Arrays:
        """The weighted mean: the sum divided by the total weight."""
        if self.sums is None:
            raise StrategyError(f"{self.what}: no updates to combine")
        if self.total_weight <= 0:
            raise StrategyError(
                f"{self.what}: the {self.count} updates report 0 examples in total; "
                "at least one site must report num_examples > 0"
            )
        return self.scaled(self.total_weight)

    def reset(self) -> None:
        self.sums = None
        self.total_weight = 0.0
        self.count = 0


def check_num_examples(update: Update, what: str) -> int:
    """The update's example count, refused if negative or not an integer."""
    count = update.num_examples
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise StrategyError(
            f"{what}: update from site {update.site!r} has num_examples {count!r}; it must be an integer >= 0"
        )
    return int(count)


def weighted_mean(updates: Iterable[Update], what: str) -> Arrays:
    """The example-weighted mean change, streamed: sum(n_i * delta_i) / sum(n_i).

    Parameters
    ----------
    updates : iterable of Update
        Any iterable, a generator included; each update is dropped once added.
    what : str
        The caller's name for error messages.

    Returns
    -------
    dict of str to ndarray
        float32 arrays with the updates' names and shapes.

    Raises
    ------
    StrategyError
        No updates, a negative count, or zero examples in total.
    ArraysMismatch
        An update whose names or shapes differ from the first one's.
    """
    total = WeightedSum(what)
    for update in updates:
        total.add(update.arrays, check_num_examples(update, what), site=update.site)
    return total.mean()


class FedAvg(Strategy):
    """Federated averaging: the global change is the example-weighted mean of the sites' changes.

    change = sum_i n_i * delta_i / sum_i n_i (McMahan et al. 2017, "Communication-Efficient
    Learning of Deep Networks from Decentralized Data"). The sum is streamed in float64, so
    `combine` accepts a generator and never holds more than one update besides the sum.
    """

    name: ClassVar[str] = "fedavg"
    weighted_mean: ClassVar[bool] = True
    PARAMETERS: ClassVar[Parameters] = {}

    def combine(self, updates: Iterable[Update]) -> Arrays:
        """The example-weighted mean of the updates' changes.

        Raises
        ------
        StrategyError
            No updates, a negative ``num_examples``, or zero examples in total.
        ArraysMismatch
            Updates whose array names or shapes differ.
        """
        return weighted_mean(updates, self.name)


class FedProx(FedAvg):
    """FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks").

    The server side is FedAvg's; what differs is local training, which minimises
    ``loss(w) + proximal_mu / 2 * ||w - w_global||^2`` to keep heterogeneous sites
    from drifting. This class only sends ``proximal_mu`` to the sites through
    `fit_config`: adding the proximal term is the local trainer's job.

    Parameters
    ----------
    proximal_mu : float
        Weight of the proximal term, > 0. The default 0.01 is one of the values
        the paper sweeps ({0.001, 0.01, 0.1, 1}); tune it per task.
    """

    name: ClassVar[str] = "fedprox"
    PARAMETERS: ClassVar[Parameters] = {"proximal_mu": (float, 0.01, "> 0")}

    def __init__(self, proximal_mu: float = 0.01) -> None:
        if not proximal_mu > 0 or not np.isfinite(proximal_mu):
            raise StrategyError(
                f"fedprox: proximal_mu {proximal_mu} must be > 0 (with 0 FedProx is FedAvg: choose 'fedavg')"
            )
        self.proximal_mu = float(proximal_mu)

    def fit_config(self, round_number: int) -> dict[str, Any]:
        return {"proximal_mu": self.proximal_mu}
