"""Buffered asynchronous aggregation: FedBuff (Nguyen et al. 2022, "Federated Learning
with Buffered Asynchronous Aggregation", Algorithm 1).

Sites train whenever they can, starting from whatever global version they last
fetched. The server adds each arriving change to a buffer, discounted by how
stale it is, and moves the global weights once K changes have arrived.

Weighting. The paper uses ``change = (1/K) * sum_i s(tau_i) * delta_i``: every
update counts the same, which fits its clients, all running the same number of
local steps. Ours train on however many examples they have labelled so far, and
a regional aggregator's update (see `hierarchy`) stands for many sites, so by
default each update also counts by its ``num_examples``::

    change = sum_i n_i * s(tau_i) * delta_i / sum_i n_i,    s(tau) = (1 + tau) ** -a

With equal counts this is exactly the paper's rule, and with no staleness it is
FedAvg over the buffer. The divisor leaves out s on purpose, as the paper's K
does: stale updates shrink the step rather than only losing ground to fresh
ones. ``weight_by_examples=False`` gives the paper's rule unchanged.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from learners.federated.strategies.base import Strategy, StrategyError
from learners.federated.strategies.fedavg import WeightedSum, check_num_examples
from learners.federated.updates import Arrays, Update, arrays_add, arrays_check_like, arrays_copy


class BufferedAsyncAggregator:
    """The server side of FedBuff: a staleness-discounted buffer of K updates.

    Parameters
    ----------
    weights : dict of str to ndarray
        The initial global weights, version 0.
    buffer_size : int
        K >= 1, updates per aggregation (the paper mostly uses K = 10).
    server_lr : float
        > 0, scales the buffered change before it is applied. Default 1.0.
    staleness_exponent : float
        a >= 0 in s(tau) = (1 + tau) ** -a. Default 0.5, the paper's 1 / sqrt(1 + tau).
    max_staleness : int or None
        Updates staler than this many versions are refused (counted in
        `refused_stale`). None accepts any staleness.
    strategy : Strategy or None
        A server-side rule whose `apply` moves the weights (`FedAdam`, `FedAvgM`);
        None adds the change. Only example-weighted-mean strategies fit, since the
        buffer keeps a running weighted sum, never the updates themselves.
    weight_by_examples : bool
        Weight each update by ``num_examples`` as well as staleness (default), or
        count every update the same, as in the paper.
    """

    def __init__(
        self,
        weights: Mapping[str, np.ndarray],
        buffer_size: int,
        server_lr: float = 1.0,
        staleness_exponent: float = 0.5,
        max_staleness: int | None = None,
        strategy: Strategy | None = None,
        weight_by_examples: bool = True,
    ) -> None:
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, (int, np.integer)) or buffer_size < 1:
            raise StrategyError(f"fedbuff: buffer_size {buffer_size!r} must be an integer >= 1")
        if not server_lr > 0 or not np.isfinite(server_lr):
            raise StrategyError(f"fedbuff: server_lr {server_lr} must be a finite number > 0")
        if not staleness_exponent >= 0 or not np.isfinite(staleness_exponent):
            raise StrategyError(f"fedbuff: staleness_exponent {staleness_exponent} must be >= 0 (0 ignores staleness)")
        if max_staleness is not None and max_staleness < 0:
            raise StrategyError(f"fedbuff: max_staleness {max_staleness} must be >= 0, or None to accept any")
        if strategy is not None and not strategy.weighted_mean:
            raise StrategyError(
                f"fedbuff: strategy {strategy.name!r} needs every update in the clear and cannot run asynchronously; "
                "use an example-weighted one (fedavg, fedadam, fedavgm)"
            )
        self._weights = arrays_copy(weights)
        self.buffer_size = int(buffer_size)
        self.server_lr = float(server_lr)
        self.staleness_exponent = float(staleness_exponent)
        self.max_staleness = max_staleness
        self.strategy = strategy
        self.weight_by_examples = weight_by_examples
        self.refused_stale = 0
        self._version = 0
        self._buffer = WeightedSum("fedbuff")
        self._buffer_examples = 0

    @property
    def version(self) -> int:
        """The global model version: the number of aggregations so far."""
        return self._version

    @property
    def weights(self) -> Arrays:
        """A copy of the current global weights."""
        return arrays_copy(self._weights)

    @property
    def buffered(self) -> int:
        """Updates waiting in the buffer."""
        return self._buffer.count

    def staleness_weight(self, staleness: int) -> float:
        """s(tau) = (1 + tau) ** -a."""
        return float((1 + staleness) ** -self.staleness_exponent)

    def receive(self, update: Update) -> bool:
        """Buffer one site's change; aggregate when the buffer holds K.

        Parameters
        ----------
        update : Update
            The change a site made starting from global version ``update.base_version``.

        Returns
        -------
        bool
            True when this update filled the buffer and the global weights moved
            (version + 1); False when it was buffered, or refused as too stale.

        Raises
        ------
        StrategyError
            An update from a version the server has not reached, or with no examples
            while weighting by examples.
        ArraysMismatch
            An update whose array names or shapes differ from the model's.
        """
        staleness = self._version - update.base_version
        if staleness < 0:
            raise StrategyError(
                f"fedbuff: update from site {update.site!r} starts from version {update.base_version}, "
                f"but the global model is only at version {self._version}"
            )
        if self.max_staleness is not None and staleness > self.max_staleness:
            self.refused_stale += 1
            return False
        arrays_check_like(self._weights, update.arrays, what=f"fedbuff: update from site {update.site!r}")
        examples = check_num_examples(update, "fedbuff") if self.weight_by_examples else 1
        if examples == 0:
            raise StrategyError(
                f"fedbuff: update from site {update.site!r} reports num_examples 0; it would fill a buffer slot "
                "and move nothing (send updates only after training on examples)"
            )
        self._buffer.add(update.arrays, examples * self.staleness_weight(staleness), site=update.site)
        self._buffer_examples += examples
        if self._buffer.count < self.buffer_size:
            return False
        self._aggregate()
        return True

    def _aggregate(self) -> None:
        change = self._buffer.scaled(self._buffer_examples)
        if self.strategy is None:
            self._weights = arrays_add(self._weights, change, self.server_lr)
        else:
            scaled = {name: (self.server_lr * value).astype(np.float32) for name, value in change.items()}
            self._weights = self.strategy.apply(self._weights, scaled)
        self._version += 1
        self._buffer.reset()
        self._buffer_examples = 0
