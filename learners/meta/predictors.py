"""What adaptation to a new task returns: a classifier with scikit-learn's ``predict_proba``/``predict``.

Each predictor holds its own copy of the parameters it uses, detached from the
meta-parameters: further meta-training does not change an adapted model, and
predicting never builds an autograd graph.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from learners.meta.functional import Params, embeddings_of, logits_of, squared_distances


class Predictor(Protocol):
    classes_: np.ndarray

    def predict_proba(self, X: Any) -> np.ndarray: ...

    def predict(self, X: Any) -> np.ndarray: ...


def as_features(X: Any) -> torch.Tensor:
    """Rows as a float32 tensor (the dtype of the models), from a numpy array or tensor."""
    if isinstance(X, torch.Tensor):
        return X.detach().to(torch.float32)
    array = np.asarray(X, dtype=np.float32)
    # Cached feature rows are read-only views of database bytes; torch wants memory it may write.
    return torch.from_numpy(array if array.flags.writeable else array.copy())


class AdaptedModel:
    """The model with task-adapted parameters (MAML, FOMAML, ANIL, Reptile).

    Parameters
    ----------
    model : nn.Module
        The architecture.
    params : dict of str to Tensor
        Adapted parameters; stored detached.
    classes : numpy.ndarray
        Original labels: output column i is ``classes[i]``.
    """

    def __init__(self, model: nn.Module, params: Params, classes: np.ndarray) -> None:
        self.model = model
        self.params_ = {k: v.detach() for k, v in params.items()}
        self.classes_ = classes

    @torch.no_grad()
    def predict_proba(self, X: Any) -> np.ndarray:
        logits = logits_of(self.model, self.params_, as_features(X))
        return torch.softmax(logits.to(torch.float64), dim=-1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class PrototypeClassifier:
    """Nearest class prototype in the learnt embedding, with probabilities softmax(-squared distance) (ProtoNet).

    Parameters
    ----------
    model : nn.Module
        The architecture; only its encoder is used.
    params : dict of str to Tensor
        Meta-parameters; stored detached.
    prototypes : Tensor
        (C, e) mean embedding of each class's support examples.
    classes : numpy.ndarray
        Original labels, in prototype order.
    """

    def __init__(self, model: nn.Module, params: Params, prototypes: torch.Tensor, classes: np.ndarray) -> None:
        self.model = model
        self.params_ = {k: v.detach() for k, v in params.items()}
        self.prototypes_ = prototypes.detach()
        self.classes_ = classes

    @torch.no_grad()
    def squared_distances(self, X: Any) -> np.ndarray:
        """(n, C) squared Euclidean distances from each row's embedding to each prototype."""
        embedded = embeddings_of(self.model, self.params_, as_features(X))
        return squared_distances(embedded, self.prototypes_).numpy()

    def predict_proba(self, X: Any) -> np.ndarray:
        logits = -torch.from_numpy(self.squared_distances(X)).to(torch.float64)
        return torch.softmax(logits, dim=-1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[self.squared_distances(X).argmin(axis=1)]
