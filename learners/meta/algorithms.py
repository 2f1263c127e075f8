"""Meta-learning algorithm registry: name (as stored on a meta-model record) -> class.

Every class implements `base.MetaAlgorithm` and is built as ``cls(model, **hyperparameters)``.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from learners.meta.base import MetaAlgorithm
from learners.meta.maml import ANIL, FOMAML, MAML
from learners.meta.protonet import ProtoNet
from learners.meta.reptile import Reptile

ALGORITHMS: dict[str, type[MetaAlgorithm]] = {cls.name: cls for cls in (MAML, FOMAML, ANIL, Reptile, ProtoNet)}


class UnknownAlgorithm(ValueError):
    """An algorithm name that is not in the registry."""


def algorithm_create(name: str, model: nn.Module, **hyperparameters: Any) -> MetaAlgorithm:
    """The registered algorithm `name` around `model`."""
    try:
        cls = ALGORITHMS[name]
    except KeyError:
        raise UnknownAlgorithm(f"unknown meta-learning algorithm {name!r}; choose one of {sorted(ALGORITHMS)}") from None
    return cls(model, **hyperparameters)
