"""Featurisers on plain payloads, and features cached per item and featuriser version."""
import io
import json

import numpy as np
import pytest
from scipy import sparse

from annotate.errors import WorkbenchError
from annotate.models import Item
from annotate.services.importing import ImportFailed, import_items
from annotate.services.projects import project_settings_update
from learners.ml.feature_rows import rows_decode, rows_encode
from learners.ml.featurisers import FeaturiserError, featuriser_create
from learners.models import FeatureSkip, FeatureSpace, ItemFeatures
from learners.services.features import (
    FeaturisingFailed,
    feature_skips,
    feature_space_current,
    features_fill,
    features_iter_open,
    features_load,
)
from tests.factories import add_items, make_project


def test_rows_round_trip_dense_and_sparse():
    dense = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    assert np.array_equal(rows_decode(rows_encode(dense), dim=7, is_sparse=False), dense)
    sp = sparse.random(6, 50, density=0.1, format="lil", random_state=1, dtype=np.float32)
    sp[3] = 0  # an empty row
    sp = sp.tocsr()
    back = rows_decode(rows_encode(sp), dim=50, is_sparse=True)
    assert (back != sp).nnz == 0 and back.shape == (6, 50)


def test_a_row_of_the_wrong_width_is_reported_not_reshaped():
    with pytest.raises(ValueError, match="do not have 8 values"):
        rows_decode(rows_encode(np.zeros((2, 7))), dim=8, is_sparse=False)


def test_tabular_imputes_scales_and_one_hots_with_unseen_values_as_zeros():
    rows = [{"age": "30", "city": "Oslo"}, {"age": 50, "city": "Rome"}, {"age": "", "city": "Oslo"}]
    featuriser = featuriser_create("tabular").fit(rows)
    X = featuriser.transform(rows + [{"age": "x", "city": "Paris"}])
    assert X.shape == (4, 3) and featuriser.dim == 3
    assert X[2, 0] == pytest.approx(0.0)  # missing age -> the mean -> 0 after scaling
    # std of (30, 50, 40 imputed) is sqrt(200/3), so 30 -> -10 / 8.165
    assert X[0, 0] == pytest.approx(-np.sqrt(1.5)) and X[1, 0] == pytest.approx(np.sqrt(1.5))
    assert X[3].tolist() == [0.0, 0.0, 0.0]  # non-numeric age counts as missing; unseen city is all zeros


def test_image_pixels_scale_and_refuse_a_different_size():
    featuriser = featuriser_create("image_pixels").fit(["0 8 16 4", [[2, 4], [6, 16]]])
    assert featuriser.transform(["16 0 0 8"]).tolist() == [[1.0, 0.0, 0.0, 0.5]]
    with pytest.raises(FeaturiserError, match="image 0 has 3 pixels; this project's images have 4"):
        featuriser.transform(["1 2 3"])
    with pytest.raises(FeaturiserError, match="numbers separated"):
        featuriser.transform(["1 2 x 4"])


def test_minilm_embeds_offline_with_unit_vectors_that_put_paraphrases_close():
    featuriser = featuriser_create("text_minilm")
    X = featuriser.transform(["The striker scored twice in the final.", "Two goals from the forward won the cup.",
                              "The central bank raised interest rates."])
    assert X.shape == (3, 384) and X.dtype == np.float32
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-4)
    assert X[0] @ X[1] > X[0] @ X[2] + 0.2


@pytest.mark.django_db
def test_features_are_computed_once_per_item_and_only_for_new_items():
    project = make_project()
    add_items(project, ["a cat", "a dog", "a bird"])
    space = feature_space_current(project)

    assert features_fill(space) == 3
    assert features_fill(space) == 0
    body = json.dumps({"id": "new", "text": "a fish"}) + "\n"
    import_items(project=project, stream=io.BytesIO(body.encode()), file_format="jsonl", source_name="more.jsonl")
    assert features_fill(space) == 1
    assert ItemFeatures.objects.filter(space=space).count() == 4
    new = Item.objects.get(project=project, external_id="new")
    assert features_load(space, [new.pk]).shape == (1, space.dim)


@pytest.mark.django_db
def test_open_items_are_read_in_chunks_without_the_done_ones():
    project = make_project()
    items = add_items(project, [f"text number {i}" for i in range(7)])
    space = feature_space_current(project)
    features_fill(space)
    Item.objects.filter(pk=items[2].pk).update(done=True)

    chunks = list(features_iter_open(space, chunk=3))

    assert [len(ids) for ids, _ in chunks] == [3, 3]
    assert np.concatenate([ids for ids, _ in chunks]).tolist() == [i.pk for i in items if i.pk != items[2].pk]


@pytest.mark.django_db
def test_changing_the_featuriser_makes_a_new_space_and_keeps_the_old_rows():
    project = make_project()
    add_items(project, ["a cat", "a dog"])
    features_fill(feature_space_current(project))

    project_settings_update(project=project, featuriser="text_minilm", estimator=project.estimator,
                            query_strategy=project.query_strategy)
    space = feature_space_current(project)
    features_fill(space)

    assert space.featuriser == "text_minilm" and space.dim == 384 and not space.is_sparse
    assert FeatureSpace.objects.filter(project=project).count() == 2
    assert ItemFeatures.objects.filter(space__project=project).count() == 4


@pytest.mark.django_db
def test_settings_refuse_a_featuriser_of_another_modality_and_change_nothing():
    project = make_project()
    with pytest.raises(WorkbenchError, match="does not read text items"):
        project_settings_update(project=project, featuriser="image_pixels", estimator="logistic_regression",
                                query_strategy="margin")
    project.refresh_from_db()
    assert project.featuriser == "text_tfidf"


@pytest.mark.django_db
def test_image_import_checks_pixels_and_names_the_row():
    project = make_project(modality="image", labels=("0", "1"))
    bad = "id,pixels\na,0 1 2 3\nb,0 1 x 3\n"
    with pytest.raises(ImportFailed) as caught:
        import_items(project=project, stream=io.BytesIO(bad.encode()), file_format="csv", source_name="img.csv")
    assert "row 2:" in str(caught.value.errors) and "value 3 ('x') is not a number" in str(caught.value.errors)
    assert not Item.objects.filter(project=project).exists()
    good = "id,pixels\na,0 1 2 3\nb,4 5 6 16\n"
    import_items(project=project, stream=io.BytesIO(good.encode()), file_format="csv", source_name="img.csv")
    space = feature_space_current(project)
    features_fill(space)
    assert space.featuriser == "image_pixels" and space.dim == 4


# --- one bad item never blocks the others -----------------------------------------------------------


def legacy_item(project, external_id: str, data: dict) -> Item:
    """An item stored before the importer checked what featurisers read (it refuses these now)."""
    return Item.objects.create(project=project, external_id=external_id, data=data)


@pytest.mark.django_db
def test_an_unreadable_image_is_skipped_with_its_reason_and_the_others_are_featurised():
    project = make_project(modality="image", labels=("0", "1"))
    good = "id,pixels\na,0 1 2 3\nb,4 5 6 16\nc,1 1 1 1\n"
    import_items(project=project, stream=io.BytesIO(good.encode()), file_format="csv", source_name="img.csv")
    bad = legacy_item(project, "odd", {"pixels": "1 2 3"})
    legacy_item(project, "junk", {"pixels": "1 2 x 4"})

    space = feature_space_current(project)  # the fit sample holds the odd ones too

    assert space.dim == 4
    assert features_fill(space) == 3
    assert ItemFeatures.objects.filter(space=space).count() == 3
    count, reasons = feature_skips(project)
    assert count == 2
    assert reasons == ["item 'odd': image 0 has 3 pixels; this project's images have 4",
                       "item 'junk': pixels must be numbers separated by spaces or commas"]
    assert FeatureSkip.objects.get(space=space, item=bad).reason.startswith("item 'odd'")
    assert features_fill(space) == 0, "a skipped item is not tried again"
    assert sum(len(ids) for ids, _ in features_iter_open(space)) == 3
    with pytest.raises(FeaturisingFailed, match="skipped as unreadable: item 'odd': image 0 has 3 pixels"):
        features_load(space, [bad.pk])


@pytest.mark.django_db
def test_a_tabular_number_beyond_float32_is_skipped_not_fatal():
    project = make_project(modality="tabular", labels=("yes", "no"))
    rows = "id,x,city\na,1,Oslo\nb,3,Rome\nc,5,Oslo\n"
    import_items(project=project, stream=io.BytesIO(rows.encode()), file_format="csv", source_name="t.csv")
    legacy_item(project, "huge-int", {"x": 10**400, "city": "Oslo"})
    legacy_item(project, "huge-text", {"x": "9" * 5_000, "city": "Rome"})

    space = feature_space_current(project)

    assert features_fill(space) == 3
    count, reasons = feature_skips(project)
    assert count == 2
    assert reasons[0] == "item 'huge-int': column 'x' is an integer of about 401 digits, beyond what a 32-bit float holds (3.4e38)"
    assert reasons[1].startswith("item 'huge-text': column 'x' is '99999999999... (5,002 characters)")
    X = features_load(space, list(Item.objects.filter(project=project, external_id__in="abc").values_list("id", flat=True)))
    # In the fit the two huge values count as missing (the mean, 3): the std of 1, 3, 5, 3, 3 is sqrt(1.6).
    assert np.all(np.isfinite(X)) and X[:, 0].tolist() == pytest.approx([-2 / np.sqrt(1.6), 0.0, 2 / np.sqrt(1.6)])


@pytest.mark.django_db
def test_a_text_that_is_not_a_string_is_skipped_not_fatal():
    project = make_project()
    add_items(project, ["a cat", "a dog"])
    legacy_item(project, "number", {"text": 42})

    space = feature_space_current(project)

    assert features_fill(space) == 2
    assert feature_skips(project) == (1, ["item 'number': text must be a string, not int"])


@pytest.mark.django_db
def test_a_corrupt_cached_row_is_set_aside_and_the_others_are_still_read():
    project = make_project(modality="tabular", labels=("yes", "no"))
    rows = "id,x,y\na,1,2\nb,3,4\nc,5,7\n"
    import_items(project=project, stream=io.BytesIO(rows.encode()), file_format="csv", source_name="t.csv")
    space = feature_space_current(project)
    features_fill(space)
    a, b, c = Item.objects.filter(project=project).order_by("external_id")
    ItemFeatures.objects.filter(space=space, item=b).update(vector=b"\x00" * 3)

    chunks = list(features_iter_open(space))

    assert [ids.tolist() for ids, _ in chunks] == [[a.pk, c.pk]]
    assert chunks[0][1].shape == (2, 2)
    assert feature_skips(project) == (1, ["item 'b': its cached feature row is corrupt (3 bytes, where rows of this "
                                          "space have 8); delete this skip to featurise it again"])
    assert not ItemFeatures.objects.filter(space=space, item=b).exists()
    assert features_load(space, [a.pk, c.pk]).shape == (2, 2)
