"""Aggregation strategies: name (as stored on a federation's settings) -> class.

Every class implements `base.Strategy` and lists its keyword parameters in
``PARAMETERS`` (name -> (type, default, rule)), which is what a form shows and
what `strategy_create` checks before the constructor checks the values.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from learners.federated.strategies.base import Strategy, StrategyError
from learners.federated.strategies.fedavg import FedAvg, FedProx, Parameters
from learners.federated.strategies.robust import CoordinateMedian, Krum, TrimmedMean
from learners.federated.strategies.server_optimizers import FedAdam, FedAvgM

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedProx, FedAdam, FedAvgM, CoordinateMedian, TrimmedMean, Krum)
}


class UnknownStrategy(ValueError):
    """A strategy name that is not in the registry."""


def _coerce(strategy: str, parameter: str, kind: type, value: Any) -> Any:
    # bool is an int subclass, and True as a learning rate is always a mistake.
    if isinstance(value, bool):
        ok = False
    elif kind is float:
        ok = isinstance(value, (int, float, np.integer, np.floating))
    elif kind is int:
        ok = isinstance(value, (int, np.integer))
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise StrategyError(
            f"{strategy}: parameter {parameter!r} must be {kind.__name__}, got {value!r} ({type(value).__name__})"
        )
    return kind(value)


def _strategy_class(name: str) -> type[Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise UnknownStrategy(f"unknown aggregation strategy {name!r}; choose one of {sorted(STRATEGIES)}") from None


def strategy_parameters(name: str) -> Parameters:
    """The parameters strategy `name` accepts: parameter -> (type, default, rule).

    Raises
    ------
    UnknownStrategy
        `name` is not registered.
    """
    return dict(getattr(_strategy_class(name), "PARAMETERS", {}))


def strategy_create(name: str, **params: Any) -> Strategy:
    """The registered strategy `name`, built with `params` (defaults for the rest).

    Parameters
    ----------
    name : str
        A key of `STRATEGIES`.
    **params
        The strategy's parameters, as listed in its ``PARAMETERS``.

    Raises
    ------
    UnknownStrategy
        `name` is not registered.
    StrategyError
        A parameter the strategy does not take, of the wrong type, or out of range.
    """
    cls = _strategy_class(name)
    accepted: Parameters = getattr(cls, "PARAMETERS", {})
    coerced: dict[str, Any] = {}
    for parameter, value in params.items():
        if parameter not in accepted:
            takes = f"accepted: {', '.join(accepted)}" if accepted else f"{name} takes no parameters"
            raise StrategyError(f"{name}: unknown parameter {parameter!r}; {takes}")
        coerced[parameter] = _coerce(name, parameter, accepted[parameter][0], value)
    return cls(**coerced)


__all__ = [
    "STRATEGIES", "CoordinateMedian", "FedAdam", "FedAvg", "FedAvgM", "FedProx", "Krum", "Parameters", "Strategy",
    "StrategyError", "TrimmedMean", "UnknownStrategy", "strategy_create", "strategy_parameters",
]
