"""What a project may choose, by name, without importing the engine.

Web processes render the settings page and validate choices from this
catalog; the registries in `learners.ml` (which load scikit-learn and torch)
stay in the workers. `tests/test_catalog.py` checks that the two agree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Choice:
    name: str
    title: str
    description: str
    modalities: frozenset[str] = frozenset({"text", "tabular", "image"})
    needs: frozenset[str] = field(default_factory=frozenset)  # strategies: what the estimator must offer
    provides: frozenset[str] = field(default_factory=frozenset)  # estimators: e.g. mc_dropout


FEATURISERS: dict[str, Choice] = {c.name: c for c in [
    Choice("text_tfidf", "TF-IDF words and bigrams",
           "Sparse TF-IDF of words and word pairs, vocabulary fitted on the first items featurised.",
           frozenset({"text"})),
    Choice("text_minilm", "MiniLM sentence embeddings",
           "384-d all-MiniLM-L6-v2 embeddings of each text (bundled model, runs offline on CPU).",
           frozenset({"text"}), provides=frozenset({"shared_space"})),
    Choice("tabular", "Tabular columns",
           "Numeric columns imputed and standardised, other columns one-hot.", frozenset({"tabular"})),
    Choice("image_pixels", "Image pixels",
           "Small greyscale images as pixel intensities scaled to [0, 1].", frozenset({"image"}),
           provides=frozenset({"shared_space"})),
]}
# "shared_space": a featuriser fitted on nothing project-specific, so a vector means the same in
# every project and meta-learning can pool projects (images: of the same size). TF-IDF
# vocabularies and tabular encoders are fitted per project, so their spaces differ.

DEFAULT_FEATURISER = {"text": "text_tfidf", "tabular": "tabular", "image": "image_pixels"}

ESTIMATORS: dict[str, Choice] = {c.name: c for c in [
    Choice("logistic_regression", "Logistic regression", "Fast and well calibrated; the default."),
    Choice("linear_svm", "Linear SVM (calibrated)", "Linear SVM with probabilities calibrated by cross-validation."),
    Choice("random_forest", "Random forest", "200 trees; captures interactions between tabular columns."),
    Choice("mlp", "Neural network (MLP)",
           "A PyTorch multi-layer perceptron with dropout; needed for BALD.", provides=frozenset({"mc_dropout"})),
]}

STRATEGIES: dict[str, Choice] = {c.name: c for c in [
    Choice("margin", "Margin", "Items where the top two classes are closest; the default."),
    Choice("least_confident", "Least confident", "Items whose most likely class has the lowest probability."),
    Choice("entropy", "Entropy", "Items with the flattest predicted class distribution."),
    Choice("random", "Random", "Items in a seeded random order: the baseline every strategy must beat."),
    Choice("qbc_vote_entropy", "Query by committee (vote entropy)",
           "A bagged committee of the estimator votes; items it splits on come first.",
           needs=frozenset({"committee"})),
    Choice("qbc_kl", "Query by committee (KL divergence)",
           "Items where committee members' class probabilities diverge most from their consensus.",
           needs=frozenset({"committee"})),
    Choice("density_margin", "Density-weighted margin",
           "Margin uncertainty weighted by how typical the item is of the pool (information density)."),
    Choice("bald", "BALD (MC dropout)",
           "Items where dropout samples of the network disagree; needs the MLP estimator.",
           needs=frozenset({"mc_dropout"})),
    Choice("ranked_batch", "Ranked batch (diverse)",
           "Uncertain items, ranked so a batch for concurrent annotators is spread out (Cardoso et al.)."),
    Choice("kcenter", "k-center greedy (core-set)",
           "The first batch covers the pool: each pick is the item farthest from everything labelled or picked."),
    Choice("kmeans_pp", "Cluster coverage (k-means++)",
           "No model needed: items spread over the feature space, for a cold start or pure exploration."),
]}


class InvalidChoice(ValueError):
    """A featuriser, estimator or strategy name that is unknown or does not fit the project."""


def choices_validate(*, modality: str, featuriser: str, estimator: str, query_strategy: str) -> None:
    """Raise InvalidChoice with a message an owner can act on, or return None."""
    for kind, name, catalog in (
        ("featuriser", featuriser, FEATURISERS), ("estimator", estimator, ESTIMATORS),
        ("query strategy", query_strategy, STRATEGIES),
    ):
        if name not in catalog:
            raise InvalidChoice(f"{kind} {name!r} is not one of {sorted(catalog)}")
    if modality not in FEATURISERS[featuriser].modalities:
        fitting = sorted(n for n, c in FEATURISERS.items() if modality in c.modalities)
        raise InvalidChoice(f"featuriser {featuriser!r} does not read {modality} items; use one of {fitting}")
    needs = STRATEGIES[query_strategy].needs
    if "mc_dropout" in needs and "mc_dropout" not in ESTIMATORS[estimator].provides:
        raise InvalidChoice(f"query strategy {query_strategy!r} needs dropout sampling; choose the 'mlp' estimator")

META_ALGORITHMS: dict[str, Choice] = {c.name: c for c in [
    Choice("protonet", "Prototypical networks",
           "Learns an embedding where each class is the mean of its examples; any number of classes."),
    Choice("maml", "MAML", "Learns an initialisation that a few gradient steps adapt to a new label set."),
    Choice("fomaml", "First-order MAML", "MAML without second derivatives: cheaper, usually as good."),
    Choice("anil", "ANIL", "MAML that adapts only the classifier head; the body is shared."),
    Choice("reptile", "Reptile", "Moves the initialisation towards weights trained on each task."),
]}

# Meta-training hyper-parameters, name: (type, minimum, maximum, default). The web form and
# `learners.services.meta.hyper_parameters_clean` read them from here, so neither loads torch;
# anything else given in `hyper_parameters` is refused.
META_HYPER_PARAMETERS: dict[str, tuple[type, float, float, Any]] = {
    "n_way": (int, 2, 64, 5),
    "k_shot": (int, 1, 50, 1),
    "q_query": (int, 1, 100, 5),
    "steps": (int, 1, 50_000, 300),
    "seed": (int, 0, 2**31 - 1, 0),
    "meta_batch": (int, 1, 256, 8),
    "meta_lr": (float, 1e-6, 1.0, 1e-3),
    "hidden": (int, 4, 4096, 256),
    "lr": (float, 1e-5, 10.0, 0.1),
    "adapt_steps": (int, 0, 100, 5),
}
