"""A meta-learnt model as bytes, for a database field: algorithm, hyper-parameters, architecture, meta-parameters.

The payload holds only dicts, lists, strings, numbers and tensors, so it loads
with ``torch.load(weights_only=True)``: reading an artifact runs no pickled code.
"""
from __future__ import annotations

import io
from typing import Any

import torch

from learners.meta.algorithms import ALGORITHMS, algorithm_create
from learners.meta.base import MetaAlgorithm
from learners.meta.models import MODELS, MetaNetwork

FORMAT_VERSION = 1


class MetaArtifactError(ValueError):
    """Bytes that are not a meta-learner this code can rebuild, or a meta-learner it cannot save."""


def meta_learner_to_bytes(algorithm: MetaAlgorithm) -> bytes:
    """Serialise `algorithm` with its model's architecture and current meta-parameters."""
    model = algorithm.model
    model_names = [name for name, cls in MODELS.items() if type(model) is cls]
    if not model_names:
        raise MetaArtifactError(f"cannot save a {type(model).__name__}: only models in MODELS ({sorted(MODELS)}) "
                                "can be rebuilt on load")
    assert isinstance(model, MetaNetwork)  # every class in MODELS is one
    payload = {
        "format": FORMAT_VERSION,
        "algorithm": algorithm.name,
        "hyperparameters": algorithm.hyperparameters(),
        "model": model_names[0],
        "model_config": model.config(),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def meta_learner_from_bytes(data: bytes) -> MetaAlgorithm:
    """Rebuild the algorithm and model saved by `meta_learner_to_bytes`."""
    payload: Any = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise MetaArtifactError(f"not a meta-learner artifact of format {FORMAT_VERSION} (found {found!r})")
    if payload["model"] not in MODELS:
        raise MetaArtifactError(f"artifact model {payload['model']!r} is not one of {sorted(MODELS)}")
    if payload["algorithm"] not in ALGORITHMS:
        raise MetaArtifactError(f"artifact algorithm {payload['algorithm']!r} is not one of {sorted(ALGORITHMS)}")
    model = MODELS[payload["model"]](**payload["model_config"])
    model.load_state_dict(payload["state_dict"], strict=True)
    return algorithm_create(payload["algorithm"], model, **payload["hyperparameters"])
