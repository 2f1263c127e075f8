"""The models a federation can train: ones whose weights can be averaged.

A federated model is described by a `ModelSpec` (kind, input width, class
count, hidden width) that both sides build the same network from; only its
weights travel, as named float32 arrays. "linear" is multinomial logistic
regression (the workbench's ``logistic_regression`` estimator); "mlp" is one
ReLU hidden layer (the ``mlp`` estimator). Tree ensembles and calibrated SVMs
have no weights to average and are refused.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from learners.federated.updates import Arrays


class ModelSpecError(ValueError):
    """A model description that cannot be built, or arrays that do not fit it."""


#: Project estimator name -> federated model kind.
ESTIMATOR_KINDS = {"logistic_regression": "linear", "mlp": "mlp"}


@dataclass(frozen=True)
class ModelSpec:
    kind: str
    n_features: int
    n_classes: int
    hidden: int = 64

    KINDS: ClassVar[tuple[str, ...]] = ("linear", "mlp")

    def __post_init__(self) -> None:
        if self.kind not in self.KINDS:
            raise ModelSpecError(f"model kind {self.kind!r} cannot be federated; use one of {list(self.KINDS)}")
        if self.n_features < 1 or self.n_classes < 2 or self.hidden < 1:
            raise ModelSpecError(
                f"model needs n_features >= 1, n_classes >= 2 and hidden >= 1; got {self.n_features}, "
                f"{self.n_classes}, {self.hidden}"
            )

    @classmethod
    def for_estimator(cls, estimator: str, *, n_features: int, n_classes: int, hidden: int = 64) -> "ModelSpec":
        try:
            kind = ESTIMATOR_KINDS[estimator]
        except KeyError:
            raise ModelSpecError(
                f"estimator {estimator!r} has no weights that can be averaged across sites; "
                f"use one of {sorted(ESTIMATOR_KINDS)}"
            ) from None
        return cls(kind=kind, n_features=n_features, n_classes=n_classes, hidden=hidden)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def module(self) -> nn.Module:
        if self.kind == "linear":
            return nn.Sequential(nn.Linear(self.n_features, self.n_classes))
        return nn.Sequential(nn.Linear(self.n_features, self.hidden), nn.ReLU(), nn.Linear(self.hidden, self.n_classes))

    def initial_weights(self, seed: int = 0) -> Arrays:
        """torch.nn.Linear's default initialisation, drawn from a seeded generator."""
        torch.manual_seed(seed)
        module = self.module()
        return {name: value.detach().numpy().astype(np.float32).copy() for name, value in module.named_parameters()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: tuple(value.shape) for name, value in self.module().named_parameters()}


class FederatedModel:
    """A spec's network evaluated with given weights (no state of its own between calls)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.module = spec.module()
        self._shapes = {name: tuple(p.shape) for name, p in self.module.named_parameters()}

    def check(self, weights: Mapping[str, np.ndarray]) -> None:
        got = {name: tuple(np.shape(value)) for name, value in weights.items()}
        if got != self._shapes:
            raise ModelSpecError(f"weights {got} do not fit the {self.spec.kind} model {self._shapes}")

    def tensors(self, weights: Mapping[str, np.ndarray], *, requires_grad: bool = False) -> dict[str, torch.Tensor]:
        self.check(weights)
        return {
            name: torch.tensor(np.asarray(value, dtype=np.float32), requires_grad=requires_grad)
            for name, value in weights.items()
        }

    def logits(self, params: dict[str, torch.Tensor], X: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, params, (X,))

    def predict_proba(self, weights: Mapping[str, np.ndarray], X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = self.logits(self.tensors(weights), torch.tensor(np.asarray(X, dtype=np.float32)))
            return torch.softmax(logits, dim=1).numpy()

    def evaluate(self, weights: Mapping[str, np.ndarray], X: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """Accuracy and mean cross-entropy of `weights` on (X, y); y holds class indices."""
        with torch.no_grad():
            logits = self.logits(self.tensors(weights), torch.tensor(np.asarray(X, dtype=np.float32)))
            target = torch.as_tensor(np.asarray(y, dtype=np.int64))
            loss = torch.nn.functional.cross_entropy(logits, target).item()
            accuracy = (logits.argmax(dim=1) == target).float().mean().item()
        return {"accuracy": float(accuracy), "loss": float(loss)}
