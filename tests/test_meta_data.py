"""Pooling labelled features from source projects for meta-learning: only shared feature spaces,
classes kept per project, classes with too few labels left out and reported."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

from annotate.services.importing import import_items
from learners.services.meta_data import MetaDataInvalid, pooled_sources, sources_check
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def image_project(labels: dict[str, int], size: int = 4, seed: int = 0):
    """An image project with `labels[name]` labelled images of each class (size x size pixels)."""
    project = make_project(labels=tuple(labels), modality="image", featuriser="image_pixels")
    rng = np.random.default_rng(seed)
    lines = []
    for name, n in labels.items():
        for i in range(n):
            pixels = " ".join(map(str, rng.integers(0, 17, size=size * size)))
            lines.append(json.dumps({"id": f"{name}-{i}", "pixels": pixels, "label": name}))
    import_items(project=project, stream=io.BytesIO("\n".join(lines).encode()), file_format="jsonl",
                 source_name="img.jsonl", featurise=False)
    return project


def test_pools_classes_per_project_and_leaves_out_rare_ones():
    a = image_project({"zero": 5, "one": 5, "two": 2})
    b = image_project({"zero": 6, "one": 3}, seed=1)

    X, y, report = pooled_sources([a, b], min_per_class=4)

    assert X.shape == (16, 16) and X.dtype == np.float32
    assert sorted(set(y)) == sorted([f"{a.pk}:zero", f"{a.pk}:one", f"{b.pk}:zero"]), "'zero' stays two classes"
    assert report["left_out"] == [f"{a.pk}:two (2)", f"{b.pk}:one (3)"]
    assert report["projects"][a.pk] == {"classes": 2, "items": 10}
    assert 0.0 <= X.min() and X.max() <= 1.0


def test_refuses_per_project_spaces_mixed_settings_and_sizes():
    text = make_project(featuriser="text_tfidf")
    with pytest.raises(MetaDataInvalid, match="'text_tfidf' is fitted per project.*'image_pixels', 'text_minilm'"):
        sources_check([text])
    with pytest.raises(MetaDataInvalid, match="must share modality and featuriser"):
        sources_check([text, image_project({"zero": 1, "one": 1})])
    with pytest.raises(MetaDataInvalid, match="at least one source project"):
        sources_check([])
    with pytest.raises(MetaDataInvalid, match=r"different sizes \[9, 16\]"):
        pooled_sources([image_project({"zero": 2, "one": 2}), image_project({"zero": 2, "one": 2}, size=3)],
                       min_per_class=1)
