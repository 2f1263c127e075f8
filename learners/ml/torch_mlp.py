"""A small PyTorch multilayer perceptron with the scikit-learn classifier contract and MC dropout.

`TorchMLPClassifier` trains on feature matrices (dense, or scipy sparse for TF-IDF)
on the CPU. Besides `predict_proba` (dropout off, deterministic) it offers
`predict_proba_samples`, stochastic forward passes with dropout on, which BALD
needs to separate model uncertainty from label noise.

Randomness comes only from a `torch.Generator` seeded in `fit` (initial weights,
batch order, dropout masks), so a fixed `random_state` gives identical models and
the global torch RNG and thread settings are left alone.

Sparse input: only the features present in a batch are gathered from the first
layer's weight table and only those rows get an optimiser update ("lazy" AdamW,
as TensorFlow's LazyAdam). Densifying a 64 x 50,000 TF-IDF batch and updating all
12.8M first-layer weights every step was about 25 times slower per epoch.

Threads: torch's global setting is left alone. With one OpenMP thread per core
and the cores busy (several worker processes), the threads spin-wait on each other
and a small fit ran ~50 times slower here; worker processes that train several
models side by side should run with OMP_NUM_THREADS=1 or torch.set_num_threads(1).

The class passes every scikit-learn 1.7 estimator check (tests/test_estimators.py).
Any check it stops passing goes into `expected_failed_checks` there, with its reason.
"""
from __future__ import annotations

import math
from typing import Iterator, NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import Tags, check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

# The first layer holds n_features x width weights plus two AdamW moments of the same size:
# 100,000 x 256 float32 is 100 MB each. Wider inputs want feature selection, not a bigger model.
MAX_FEATURES = 100_000
PREDICT_CHUNK = 2_048


class SparseRows(NamedTuple):
    """CSR rows in the form `F.embedding_bag` takes: column indices, row start offsets, values."""

    indices: torch.Tensor
    offsets: torch.Tensor
    values: torch.Tensor


def sparse_rows(X: sp.csr_matrix) -> SparseRows:
    return SparseRows(
        indices=torch.from_numpy(X.indices.astype(np.int64)),
        offsets=torch.from_numpy(X.indptr[:-1].astype(np.int64)),
        values=torch.tensor(X.data, dtype=torch.float32),
    )


class MLPNetwork(nn.Module):
    """ReLU layers with dropout after each hidden layer, applied only when a generator is passed.

    Weights are stored (fan_in, fan_out), so the first layer doubles as an embedding
    table that sparse rows index into. Parameters are float32; a float64 input is
    computed in float64 (prediction does this, see `TorchMLPClassifier._first_layer_chunks`).
    """

    def __init__(
        self, n_features: int, hidden_sizes: tuple[int, ...], n_classes: int, dropout: float,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        sizes = [n_features, *hidden_sizes, n_classes]
        weights, biases = [], []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
            # torch.nn.Linear's default initialisation, drawn from our generator instead of the global one.
            bound = 1.0 / math.sqrt(fan_in)
            weights.append(nn.Parameter(torch.empty(fan_in, fan_out).uniform_(-bound, bound, generator=generator)))
            biases.append(nn.Parameter(torch.empty(fan_out).uniform_(-bound, bound, generator=generator)))
        self.weights = nn.ParameterList(weights)
        self.biases = nn.ParameterList(biases)
        self.dropout = dropout

    def first_layer(self, x: torch.Tensor | SparseRows, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-activation of the first layer; `weight` replaces the full table (rows gathered for a sparse batch)."""
        weight = self.weights[0] if weight is None else weight
        if isinstance(x, SparseRows):
            out = F.embedding_bag(x.indices, weight, x.offsets, mode="sum", per_sample_weights=x.values)
        else:
            out = x @ weight.to(x.dtype)
        return out + self.biases[0].to(out.dtype)

    def rest(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits from the first layer's pre-activation; dropout is on iff `generator` is given."""
        for weight, bias in zip(self.weights[1:], self.biases[1:]):
            h = torch.relu(h)
            if generator is not None and self.dropout > 0:
                keep = torch.empty_like(h).bernoulli_(1.0 - self.dropout, generator=generator)
                h = h * keep / (1.0 - self.dropout)
            h = h @ weight.to(h.dtype) + bias.to(h.dtype)
        return h

    def forward(self, x: torch.Tensor | SparseRows, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.rest(self.first_layer(x), generator)


class LazyAdamW:
    """AdamW on the rows of a weight table that a batch touched; other rows are neither moved nor decayed."""

    def __init__(self, table: torch.Tensor, *, lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.table, self.lr, self.weight_decay, self.betas, self.eps = table, lr, weight_decay, betas, eps
        self.exp_avg = torch.zeros_like(table)
        self.exp_avg_sq = torch.zeros_like(table)
        self.steps = 0

    @torch.no_grad()
    def step(self, rows: torch.Tensor, grad: torch.Tensor) -> None:
        self.steps += 1
        beta1, beta2 = self.betas
        exp_avg = self.exp_avg[rows].mul_(beta1).add_(grad, alpha=1.0 - beta1)
        exp_avg_sq = self.exp_avg_sq[rows].mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        self.exp_avg.index_copy_(0, rows, exp_avg)
        self.exp_avg_sq.index_copy_(0, rows, exp_avg_sq)
        denominator = (exp_avg_sq / (1.0 - beta2 ** self.steps)).sqrt_().add_(self.eps)
        weights = self.table[rows].mul_(1.0 - self.lr * self.weight_decay)
        weights.addcdiv_(exp_avg, denominator, value=-self.lr / (1.0 - beta1 ** self.steps))
        self.table.index_copy_(0, rows, weights)


class TorchMLPClassifier(ClassifierMixin, BaseEstimator):
    """Multilayer perceptron trained with AdamW on the CPU, with MC-dropout sampling.

    Parameters
    ----------
    hidden_sizes : tuple of int
        Width of each hidden layer; ``()`` gives multinomial logistic regression.
    dropout : float
        Probability of zeroing a hidden unit, in training and in `predict_proba_samples`.
    lr, weight_decay : float
        AdamW learning rate and decoupled weight decay (applied to every parameter).
    max_epochs : int
        Upper bound on passes over the training data.
    batch_size : int
        Rows per optimiser step (the whole set when it is smaller).
    tol, n_iter_no_change : float, int or None
        Stop once the mean training loss of an epoch has not improved on the best by
        `tol` for `n_iter_no_change` epochs in a row (as scikit-learn's MLPClassifier
        without a validation split); None trains for `max_epochs`.
    random_state : int, RandomState or None
        Seeds weights, batch order and dropout; an int makes `fit` reproducible.
    mc_samples : int
        Default number of stochastic passes in `predict_proba_samples`.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    module_ : MLPNetwork
        The trained network (weights stored fan_in x fan_out).
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
        Mean training cross-entropy per epoch.

    Notes
    -----
    Inputs are used as given: scale dense features first (the featurisers do).
    Fitting on a single class raises ValueError, as LogisticRegression does.
    """

    def __init__(
        self, hidden_sizes: tuple[int, ...] = (256,), dropout: float = 0.2, lr: float = 1e-3,
        weight_decay: float = 1e-4, max_epochs: int = 200, batch_size: int = 64, tol: float = 1e-4,
        n_iter_no_change: int | None = 10, random_state: int | np.random.RandomState | None = None,
        mc_samples: int = 20,
    ) -> None:
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.random_state = random_state
        self.mc_samples = mc_samples

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def fit(self, X: ArrayLike | sp.spmatrix | sp.sparray, y: ArrayLike) -> TorchMLPClassifier:
        """Train a fresh network on X (n_samples, n_features), dense or sparse, and labels y."""
        self._check_params()
        X_valid: np.ndarray | sp.csr_matrix
        X_valid, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float32)
        check_classification_targets(y)
        if X_valid.shape[1] > MAX_FEATURES:
            raise ValueError(
                f"TorchMLPClassifier takes at most {MAX_FEATURES} features; got {X_valid.shape[1]}. "
                "Limit the featuriser's vocabulary or choose a linear estimator."
            )
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"TorchMLPClassifier needs samples of at least 2 classes; the data contains only one class: "
                f"{self.classes_[0]}"
            )
        generator = torch.Generator().manual_seed(_seed(self.random_state))
        network = MLPNetwork(X_valid.shape[1], tuple(self.hidden_sizes), len(self.classes_), self.dropout, generator)
        with torch.enable_grad():
            self.loss_curve_ = self._train(network, X_valid, torch.from_numpy(y_index.astype(np.int64)), generator)
        self.module_ = network
        self.n_iter_ = len(self.loss_curve_)
        return self

    def _check_params(self) -> None:
        if not all(isinstance(w, (int, np.integer)) and w > 0 for w in self.hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive integers; got {self.hidden_sizes!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {self.dropout!r}")
        for name in ("max_epochs", "batch_size", "mc_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1; got {getattr(self, name)!r}")

    def _train(self, network: MLPNetwork, X: np.ndarray | sp.csr_matrix, y: torch.Tensor,
               generator: torch.Generator) -> list[float]:
        lazy = sp.issparse(X)
        if lazy:
            table_optimizer = LazyAdamW(network.weights[0].detach(), lr=self.lr, weight_decay=self.weight_decay)
            params = [*network.weights[1:], *network.biases]
        else:
            X_dense = torch.tensor(X)
            params = list(network.parameters())
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        n_samples = X.shape[0]
        losses: list[float] = []
        best, stale = math.inf, 0
        for _ in range(self.max_epochs):
            order = torch.randperm(n_samples, generator=generator)
            total = 0.0
            for start in range(0, n_samples, self.batch_size):
                batch = order[start:start + self.batch_size]
                optimizer.zero_grad()
                if lazy:
                    rows = sparse_rows(X[batch.numpy()])
                    features, local = torch.unique(rows.indices, return_inverse=True)
                    table_rows = network.weights[0].detach()[features].requires_grad_()
                    h = network.first_layer(rows._replace(indices=local), table_rows)
                else:
                    h = network.first_layer(X_dense[batch])
                loss = F.cross_entropy(network.rest(h, generator), y[batch])
                loss.backward()
                optimizer.step()
                if lazy:
                    table_optimizer.step(features, table_rows.grad)
                total += loss.item() * len(batch)
            losses.append(total / n_samples)
            if self.n_iter_no_change is None:
                continue
            if losses[-1] < best - self.tol:
                best, stale = losses[-1], 0
            else:
                stale += 1
                if stale >= self.n_iter_no_change:
                    break
        return losses

    def _first_layer_chunks(self, X: np.ndarray | sp.csr_matrix) -> Iterator[torch.Tensor]:
        """Yield the first layer's float64 pre-activation for successive row chunks of X.

        Prediction runs in float64: float32 matrix products round differently with the
        number of rows multiplied, so a row's probabilities would depend on its batch.
        """
        for start in range(0, X.shape[0], PREDICT_CHUNK):
            chunk = X[start:start + PREDICT_CHUNK]
            if sp.issparse(chunk):
                # A sparse row's sum is taken over its own entries only, so float32 is batch-independent here.
                yield self.module_.first_layer(sparse_rows(chunk)).double()
            else:
                yield self.module_.first_layer(torch.tensor(chunk, dtype=torch.float64))

    def predict_proba(self, X: ArrayLike | sp.spmatrix | sp.sparray) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns in `classes_` order; dropout off."""
        check_is_fitted(self)
        X_valid: np.ndarray | sp.csr_matrix = validate_data(
            self, X, accept_sparse="csr", dtype=(np.float64, np.float32), reset=False)
        with torch.inference_mode():
            logits = [self.module_.rest(h) for h in self._first_layer_chunks(X_valid)]
        return torch.softmax(torch.cat(logits).double(), dim=1).numpy()

    def predict(self, X: ArrayLike | sp.spmatrix | sp.sparray) -> np.ndarray:
        """Most probable class of each row (dropout off)."""
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]

    def predict_proba_samples(
        self, X: ArrayLike | sp.spmatrix | sp.sparray, n_samples: int | None = None,
        random_state: int | np.random.RandomState | None = None,
    ) -> np.ndarray:
        """Monte Carlo dropout: class probabilities from stochastic forward passes.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_rows, n_features)
        n_samples : int, optional
            Passes to run; defaults to `mc_samples`.
        random_state : int, RandomState or None
            Seeds the dropout masks; None draws fresh ones each call.

        Returns
        -------
        ndarray of shape (n_samples, n_rows, n_classes)
            One probability matrix per pass; each row sums to 1.
        """
        check_is_fitted(self)
        n_samples = self.mc_samples if n_samples is None else n_samples
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1; got {n_samples!r}")
        X_valid: np.ndarray | sp.csr_matrix = validate_data(
            self, X, accept_sparse="csr", dtype=(np.float64, np.float32), reset=False)
        generator = torch.Generator().manual_seed(_seed(random_state))
        with torch.inference_mode():
            # Dropout acts after the first layer, so its (costly, for wide input) output is shared by all passes.
            logits = [
                torch.stack([self.module_.rest(h, generator) for _ in range(n_samples)])
                for h in self._first_layer_chunks(X_valid)
            ]
        return torch.softmax(torch.cat(logits, dim=1).double(), dim=2).numpy()


def _seed(random_state: int | np.random.RandomState | None) -> int:
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))
