"""The one interface every aggregation strategy implements.

A round, seen by a strategy:

1. ``fit_config(round_number)`` says what each site's local training needs
   (FedProx's proximal weight, say); it travels to the sites with the weights.
2. ``combine(updates)`` turns the sites' weight changes into one change. Rules
   whose result is an example-weighted mean (``weighted_mean = True``) can run
   on masked sums (secure aggregation) and streamed updates; robust rules need
   every update in the clear.
3. ``apply(weights, change)`` moves the global weights; a server-side
   optimiser (FedAdam, FedAvgM) keeps its state here. The default adds.

Strategies hold no runtime: who talks to whom is the backend's business.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable, Mapping

import numpy as np

from learners.federated.updates import Arrays, Update, arrays_add


class StrategyError(ValueError):
    """A strategy asked to do something it cannot (bad parameter, too few updates)."""


class Strategy(ABC):
    name: ClassVar[str]
    #: combine() is sum(n_i * delta_i) / sum(n_i): secure aggregation and streaming can replace it.
    weighted_mean: ClassVar[bool] = False

    def fit_config(self, round_number: int) -> dict[str, Any]:
        """Settings sent to every site with the weights for this round."""
        return {}

    @abstractmethod
    def combine(self, updates: Iterable[Update]) -> Arrays:
        """One weight change from the sites' changes."""

    def apply(self, weights: Mapping[str, np.ndarray], change: Mapping[str, np.ndarray]) -> Arrays:
        """The next global weights: by default weights + change."""
        return arrays_add(weights, change)

    def aggregate(self, weights: Mapping[str, np.ndarray], updates: Iterable[Update]) -> Arrays:
        """combine then apply: the next global weights from this round's updates."""
        return self.apply(weights, self.combine(updates))

    def state_dict(self) -> dict[str, Any]:
        """Server-side state to checkpoint between rounds (empty for stateless rules)."""
        return {}
