"""The light catalog the web side validates with agrees with the engine's registries."""
import pytest

from learners import catalog
from learners.catalog import InvalidChoice, choices_validate
from learners.meta.algorithms import ALGORITHMS
from learners.ml.estimators import ESTIMATORS
from learners.ml.featurisers import FEATURISERS
from learners.ml.strategies import STRATEGIES


def test_catalog_names_equal_the_registries():
    assert set(catalog.FEATURISERS) == set(FEATURISERS)
    assert set(catalog.ESTIMATORS) == set(ESTIMATORS)
    assert set(catalog.STRATEGIES) == set(STRATEGIES)
    assert set(catalog.META_ALGORITHMS) == set(ALGORITHMS)


def test_catalog_capabilities_match_the_engine():
    for name, cls in FEATURISERS.items():
        assert catalog.FEATURISERS[name].modalities == {cls.modality}
    for name, spec in ESTIMATORS.items():
        assert ("mc_dropout" in catalog.ESTIMATORS[name].provides) == spec.mc_dropout
    for name, strategy in STRATEGIES.items():
        wanted = strategy.needs & {"committee", "mc_dropout"}
        assert wanted <= catalog.STRATEGIES[name].needs | {"committee"}, name
        assert ("mc_dropout" in catalog.STRATEGIES[name].needs) == ("mc_dropout" in strategy.needs)
    assert set(catalog.DEFAULT_FEATURISER) == {"text", "tabular", "image"}


@pytest.mark.parametrize("kwargs, message", [
    ({"featuriser": "tabular"}, "does not read text items"),
    ({"query_strategy": "bald"}, "choose the 'mlp' estimator"),
    ({"estimator": "xgboost"}, "estimator 'xgboost' is not one of"),
    ({"query_strategy": "nearest"}, "query strategy 'nearest' is not one of"),
])
def test_a_choice_that_does_not_fit_is_refused_with_the_reason(kwargs, message):
    choice = {"modality": "text", "featuriser": "text_tfidf", "estimator": "logistic_regression",
              "query_strategy": "margin"} | kwargs
    with pytest.raises(InvalidChoice, match=message):
        choices_validate(**choice)


def test_bald_with_the_mlp_is_accepted():
    choices_validate(modality="text", featuriser="text_minilm", estimator="mlp", query_strategy="bald")
