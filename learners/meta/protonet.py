"""Prototypical networks (Snell, Swersky and Zemel, 2017).

An encoder is trained so that, in its embedding, each query lies nearest to
the mean embedding (prototype) of its class's support examples; logits are
minus the squared Euclidean distances. There is no inner loop, and a new task
may have any number of classes: adaptation is computing its prototypes.
With the identity as encoder it is the nearest-class-mean classifier
(`baselines.nearest_class_mean`).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from learners.meta.base import DifferentiableMetaAlgorithm, map_tasks
from learners.meta.episodes import EpisodeBatch
from learners.meta.functional import Params, class_prototypes, embeddings_of, protonet_loss
from learners.meta.predictors import PrototypeClassifier


class ProtoNet(DifferentiableMetaAlgorithm):
    """Prototypical network over the model's encoder (``forward(x, embed_only=True)``).

    Parameters
    ----------
    model : nn.Module
        Only its encoder is used; a head, if it has one (``model.head_names``), is
        neither trained nor used.
    """

    name = "protonet"
    uses_head = False

    def hyperparameters(self) -> dict[str, Any]:
        return {}

    @property
    def trainable_names(self) -> tuple[str, ...]:
        head = set(getattr(self.model, "head_names", ()))
        return tuple(name for name in self.meta_params() if name not in head)

    def meta_loss(self, params: Params, batch: EpisodeBatch, *, vectorize: bool = True
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over tasks of the query cross-entropy, and mean query accuracy."""
        def task(sx: torch.Tensor, sy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
            return protonet_loss(self.model, params, sx, sy, qx, qy, n_way=batch.n_way)

        losses, accuracies = map_tasks(task, batch, vectorize=vectorize)
        return losses.mean(), accuracies.mean()

    def adapt_task(self, meta_params: Params, support_x: torch.Tensor, support_y: torch.Tensor,
                   classes: np.ndarray, steps: int | None) -> PrototypeClassifier:
        """Prototypes of the support set; `steps` is ignored (there is no inner loop)."""
        params = {k: v.detach().clone() for k, v in meta_params.items()}
        with torch.no_grad():
            prototypes = class_prototypes(embeddings_of(self.model, params, support_x), support_y, len(classes))
        return PrototypeClassifier(self.model, params, prototypes, classes)
