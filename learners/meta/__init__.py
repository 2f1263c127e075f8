"""Meta-learning on `torch.func`: MAML, FOMAML, ANIL, Reptile and prototypical networks.

learn2learn does not build on Python 3.11, so the algorithms are written here as
pure functions over explicit parameter dicts (`functional`), behind a
learn2learn-shaped interface (``MAML(model, lr).clone().adapt(loss)``) and a
registry (`algorithms.ALGORITHMS`). No Django, no Celery: callers pass arrays
and callbacks.

Typical use::

    train, test = class_split(y, n_test_classes=4, seed=0)
    sampler = EpisodeSampler(X, y, classes=train, n_way=4, k_shot=1, q_query=5, seed=0)
    algorithm = algorithm_create("protonet", MetaMLP(X.shape[1], 64, 4))
    meta_train(algorithm, sampler, meta_batch=8, steps=200, meta_lr=1e-3, seed=0)
    predictor = adapt(algorithm, algorithm.meta_params(), support_x, support_y)
    predictor.predict_proba(new_rows)

Torch's thread count is left to the caller.
"""
from learners.meta.algorithms import ALGORITHMS, UnknownAlgorithm, algorithm_create
from learners.meta.base import MetaAlgorithm, NWayMismatch
from learners.meta.baselines import ClassMeanDistances, fit_from_scratch, nearest_class_mean
from learners.meta.episodes import Episode, EpisodeBatch, EpisodeError, EpisodeSampler, class_split
from learners.meta.functional import inner_adapt, maml_outer_loss, reptile_update
from learners.meta.maml import ANIL, FOMAML, MAML, Learner
from learners.meta.models import (
    MODELS,
    InputStandardisation,
    MetaMLP,
    MetaNetwork,
    ResidualMLP,
    StandardisedMLP,
    StandardisedResidualMLP,
)
from learners.meta.predictors import AdaptedModel, PrototypeClassifier
from learners.meta.protonet import ProtoNet
from learners.meta.recipes import RecipeError, meta_train_default
from learners.meta.reptile import Reptile
from learners.meta.serialization import MetaArtifactError, meta_learner_from_bytes, meta_learner_to_bytes
from learners.meta.training import IncompatibleData, adapt, evaluate_episodes, meta_train

__all__ = [
    "ALGORITHMS", "ANIL", "AdaptedModel", "ClassMeanDistances", "Episode", "EpisodeBatch", "EpisodeError",
    "EpisodeSampler", "FOMAML", "IncompatibleData", "InputStandardisation", "Learner", "MAML", "MODELS",
    "MetaAlgorithm", "MetaArtifactError", "MetaMLP", "MetaNetwork", "NWayMismatch", "ProtoNet", "PrototypeClassifier",
    "RecipeError", "Reptile", "ResidualMLP", "StandardisedMLP", "StandardisedResidualMLP", "UnknownAlgorithm",
    "adapt", "algorithm_create", "class_split", "evaluate_episodes", "fit_from_scratch", "inner_adapt",
    "maml_outer_loss", "meta_learner_from_bytes", "meta_learner_to_bytes", "meta_train", "meta_train_default",
    "nearest_class_mean", "reptile_update",
]
