"""Server-side optimisers: the FedAvg change is a pseudo-gradient that an optimiser applies.

Both combine like FedAvg (so they stream and work under secure aggregation) and
keep their moments between rounds in `apply`. The change is local minus global,
a descent direction (Reddi et al.'s Delta), so steps *add* it.
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import numpy as np

from learners.federated.strategies.base import StrategyError
from learners.federated.strategies.fedavg import FedAvg, Parameters
from learners.federated.updates import Arrays, arrays_check_like


def _check_unit_interval(strategy: str, name: str, value: float) -> None:
    if not 0 <= value < 1:
        raise StrategyError(f"{strategy}: {name} {value} must be in [0, 1)")


def _check_positive(strategy: str, name: str, value: float) -> None:
    if not value > 0 or not np.isfinite(value):
        raise StrategyError(f"{strategy}: {name} {value} must be a finite number > 0")


def _moments_load(strategy: str, state: Mapping[str, Any], key: str) -> dict[str, np.ndarray] | None:
    moments = state.get(key)
    if moments is None:
        return None
    if not isinstance(moments, Mapping):
        raise StrategyError(f"{strategy}: state {key!r} must map array names to arrays, got {type(moments).__name__}")
    return {name: np.array(value, dtype=np.float64) for name, value in moments.items()}


class FedAdam(FedAvg):
    """FedAdam (Reddi et al. 2021, "Adaptive Federated Optimization", Algorithm 2).

    With the FedAvg change as pseudo-gradient delta::

        m = beta1 * m + (1 - beta1) * delta
        v = beta2 * v + (1 - beta2) * delta ** 2
        w = w + eta * m / (sqrt(v) + tau)

    As in the paper there is no bias correction, m starts at 0 and v at tau**2
    (the paper asks for v_{-1} >= tau**2).

    Parameters
    ----------
    eta : float
        Server learning rate. The paper tunes it per task on a log grid; 1e-2 is a
        cautious middle (Flower defaults to 1e-1).
    beta1, beta2 : float
        Moment decays in [0, 1); 0.9 and 0.99 are the paper's fixed values.
    tau : float
        Adaptivity: a larger tau makes the step closer to plain momentum SGD.
        1e-3 is the paper's usual value (and Flower's default).
    """

    name: ClassVar[str] = "fedadam"
    PARAMETERS: ClassVar[Parameters] = {
        "eta": (float, 1e-2, "> 0"),
        "beta1": (float, 0.9, "in [0, 1)"),
        "beta2": (float, 0.99, "in [0, 1)"),
        "tau": (float, 1e-3, "> 0"),
    }

    def __init__(self, eta: float = 1e-2, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3) -> None:
        _check_positive(self.name, "eta", eta)
        _check_unit_interval(self.name, "beta1", beta1)
        _check_unit_interval(self.name, "beta2", beta2)
        _check_positive(self.name, "tau", tau)
        self.eta, self.beta1, self.beta2, self.tau = float(eta), float(beta1), float(beta2), float(tau)
        self.m: dict[str, np.ndarray] | None = None
        self.v: dict[str, np.ndarray] | None = None
        self.steps = 0

    def apply(self, weights: Mapping[str, np.ndarray], change: Mapping[str, np.ndarray]) -> Arrays:
        """One FedAdam step from `weights` along the pseudo-gradient `change`; updates m and v."""
        arrays_check_like(weights, change, what=f"{self.name}: change")
        if self.m is None or self.v is None:
            self.m = {name: np.zeros(np.shape(value), dtype=np.float64) for name, value in change.items()}
            self.v = {name: np.full(np.shape(value), self.tau**2, dtype=np.float64) for name, value in change.items()}
        else:
            arrays_check_like(self.m, change, what=f"{self.name}: change against the optimiser state")
        new: Arrays = {}
        for name, value in weights.items():
            delta = np.asarray(change[name], dtype=np.float64)
            self.m[name] = self.beta1 * self.m[name] + (1 - self.beta1) * delta
            self.v[name] = self.beta2 * self.v[name] + (1 - self.beta2) * np.square(delta)
            step = self.eta * self.m[name] / (np.sqrt(self.v[name]) + self.tau)
            new[name] = (np.asarray(value, dtype=np.float64) + step).astype(np.float32)
        self.steps += 1
        return new

    def state_dict(self) -> dict[str, Any]:
        """``{"m": arrays or None, "v": arrays or None, "steps": int}``, copies."""
        return {
            "m": None if self.m is None else {name: value.copy() for name, value in self.m.items()},
            "v": None if self.v is None else {name: value.copy() for name, value in self.v.items()},
            "steps": self.steps,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned (a checkpoint between rounds)."""
        self.m = _moments_load(self.name, state, "m")
        self.v = _moments_load(self.name, state, "v")
        if (self.m is None) != (self.v is None):
            raise StrategyError(f"{self.name}: state must hold both moments 'm' and 'v', or neither")
        if self.m is not None and self.v is not None:
            arrays_check_like(self.m, self.v, what=f"{self.name}: state 'v' against 'm'")
        self.steps = int(state.get("steps", 0))


class FedAvgM(FedAvg):
    """FedAvg with server momentum (Hsu et al. 2019, "Measuring the Effects of
    Non-Identical Data Distribution for Federated Visual Classification")::

        v = momentum * v + delta
        w = w + server_lr * v

    v starts at 0, so the first step is ``server_lr * delta``; with momentum 0 and
    server_lr 1 this is FedAvg.

    Parameters
    ----------
    server_lr : float
        Server learning rate, > 0. Default 1.0, FedAvg's step.
    momentum : float
        In [0, 1). Default 0.9, the usual heavy-ball value (Flower defaults to 0,
        which is FedAvg). The effective step is about server_lr / (1 - momentum),
        so lower server_lr when raising momentum, as Hsu et al. point out.
    """

    name: ClassVar[str] = "fedavgm"
    PARAMETERS: ClassVar[Parameters] = {
        "server_lr": (float, 1.0, "> 0"),
        "momentum": (float, 0.9, "in [0, 1)"),
    }

    def __init__(self, server_lr: float = 1.0, momentum: float = 0.9) -> None:
        _check_positive(self.name, "server_lr", server_lr)
        _check_unit_interval(self.name, "momentum", momentum)
        self.server_lr, self.momentum = float(server_lr), float(momentum)
        self.velocity: dict[str, np.ndarray] | None = None
        self.steps = 0

    def apply(self, weights: Mapping[str, np.ndarray], change: Mapping[str, np.ndarray]) -> Arrays:
        """One momentum step from `weights` along `change`; updates the velocity."""
        arrays_check_like(weights, change, what=f"{self.name}: change")
        if self.velocity is None:
            self.velocity = {name: np.zeros(np.shape(value), dtype=np.float64) for name, value in change.items()}
        else:
            arrays_check_like(self.velocity, change, what=f"{self.name}: change against the optimiser state")
        new: Arrays = {}
        for name, value in weights.items():
            self.velocity[name] = self.momentum * self.velocity[name] + np.asarray(change[name], dtype=np.float64)
            new[name] = (np.asarray(value, dtype=np.float64) + self.server_lr * self.velocity[name]).astype(np.float32)
        self.steps += 1
        return new

    def state_dict(self) -> dict[str, Any]:
        """``{"velocity": arrays or None, "steps": int}``, copies."""
        velocity = None if self.velocity is None else {name: value.copy() for name, value in self.velocity.items()}
        return {"velocity": velocity, "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned (a checkpoint between rounds)."""
        self.velocity = _moments_load(self.name, state, "velocity")
        self.steps = int(state.get("steps", 0))
