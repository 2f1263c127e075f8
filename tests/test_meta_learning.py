"""learners.meta: episodes, MAML/FOMAML/ANIL/Reptile/ProtoNet on torch.func, training loop, adaptation, artifacts.

The algorithm checks compare against computations that share none of the code
under test: a hand-written forward pass with explicit `torch.autograd.grad`
unrolling, central finite differences in float64, Hessian-vector products by
double backward, numpy nearest class mean. Plain arrays only, no database.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from learners.meta import (
    ALGORITHMS,
    ANIL,
    FOMAML,
    MAML,
    EpisodeBatch,
    EpisodeError,
    EpisodeSampler,
    IncompatibleData,
    MetaArtifactError,
    MetaMLP,
    NWayMismatch,
    ProtoNet,
    RecipeError,
    Reptile,
    ResidualMLP,
    UnknownAlgorithm,
    adapt,
    algorithm_create,
    class_split,
    evaluate_episodes,
    fit_from_scratch,
    inner_adapt,
    meta_learner_from_bytes,
    meta_learner_to_bytes,
    meta_train,
    meta_train_default,
    nearest_class_mean,
    reptile_update,
)

# On a busy 2-core machine two OpenMP threads spin-wait on each other: small fits run ~50x slower.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- independent reference computations -------------------------------------------------------------------------

def hand_logits(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """MetaMLP's forward written out by hand (no functional_call, no nn.Module)."""
    h = torch.relu(x @ p["body.0.weight"].T + p["body.0.bias"])
    h = torch.relu(h @ p["body.2.weight"].T + p["body.2.bias"])
    return h @ p["head.weight"].T + p["head.bias"]


def hand_loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = hand_logits(p, x)
    return (torch.logsumexp(logits, dim=1) - logits.gather(1, y[:, None]).squeeze(1)).mean()


def hand_sgd(p: dict[str, torch.Tensor], x, y, *, steps: int, lr: float, names, create_graph: bool):
    """`steps` SGD steps on `names` by explicit torch.autograd.grad."""
    fast = dict(p)
    for _ in range(steps):
        grads = torch.autograd.grad(hand_loss(fast, x, y), [fast[n] for n in names], create_graph=create_graph)
        fast.update({n: fast[n] - lr * g for n, g in zip(names, grads)})
    return fast


def hand_maml_gradient(params, tasks, *, steps: int, lr: float, names) -> dict[str, torch.Tensor]:
    """Second-order MAML meta-gradient, mean over tasks, by an unrolled create_graph=True loop."""
    theta = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
    outer = sum(
        hand_loss(hand_sgd(theta, sx, sy, steps=steps, lr=lr, names=names, create_graph=True), qx, qy)
        for sx, sy, qx, qy in tasks
    ) / len(tasks)
    return dict(zip(theta, torch.autograd.grad(outer, list(theta.values()))))


def as_batch(tasks) -> EpisodeBatch:
    support_x, support_y, query_x, query_y = (torch.stack(column) for column in zip(*tasks))
    n_way = int(support_y.max()) + 1
    return EpisodeBatch(support_x, support_y, query_x, query_y, np.tile(np.arange(n_way), (len(tasks), 1)))


def tiny_tasks(n_tasks: int, *, seed: int = 0, dtype=torch.float64, n_way: int = 2, shots: int = 3, dim: int = 3):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_way).repeat_interleave(shots)
    tasks = []
    for _ in range(n_tasks):
        centres = torch.randn(n_way, dim, generator=generator, dtype=dtype) * 2
        sx = centres[labels] + torch.randn(len(labels), dim, generator=generator, dtype=dtype)
        qx = centres[labels] + torch.randn(len(labels), dim, generator=generator, dtype=dtype)
        tasks.append((sx, labels, qx, labels))
    return tasks


def tiny_model(dtype=torch.float64) -> MetaMLP:
    return MetaMLP(3, 4, 2, seed=0).to(dtype)


def assert_dicts_close(actual, expected, **tolerance) -> None:
    assert set(actual) == set(expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], msg=lambda m, n=name: f"{n}: {m}", **tolerance)


# --- MAML, FOMAML, ANIL: meta-gradients ----------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm_class", [MAML, ANIL])
def test_maml_meta_gradient_matches_unrolled_autograd(algorithm_class):
    model = tiny_model()
    algorithm = algorithm_class(model, lr=0.4, adapt_steps=2)
    tasks = tiny_tasks(3)
    expected = hand_maml_gradient(model.params(), tasks, steps=2, lr=0.4, names=algorithm.adapt_names)

    vmapped, _ = algorithm.meta_gradients(model.params(), as_batch(tasks))
    looped, _ = algorithm.meta_gradients(model.params(), as_batch(tasks), vectorize=False)
    learner_grads = dict.fromkeys(expected, 0.0)
    for sx, sy, qx, qy in tasks:  # learn2learn style: clone, adapt, query loss, backward into the meta-parameters
        learner = algorithm.clone()
        for _ in range(2):
            learner.adapt(F.cross_entropy(learner(sx), sy))
        grads = torch.autograd.grad(F.cross_entropy(learner(qx), qy), algorithm.parameters())
        learner_grads = {n: learner_grads[n] + g / len(tasks) for n, g in zip(algorithm.trainable_names, grads)}

    assert_dicts_close(vmapped, expected, rtol=1e-10, atol=1e-12)
    assert_dicts_close(looped, expected, rtol=1e-10, atol=1e-12)
    assert_dicts_close(learner_grads, expected, rtol=1e-10, atol=1e-12)


def test_maml_meta_gradient_matches_central_finite_differences():
    model = tiny_model()
    algorithm = MAML(model, lr=0.4, adapt_steps=2)
    tasks = tiny_tasks(2, seed=1)
    names = list(model.params())

    def meta_objective(theta):
        total = 0.0
        for sx, sy, qx, qy in tasks:
            start = {k: v.detach().clone().requires_grad_() for k, v in theta.items()}
            fast = start
            for _ in range(2):
                grads = torch.autograd.grad(hand_loss(fast, sx, sy), [fast[n] for n in names])
                fast = {n: (fast[n] - 0.4 * g).detach().requires_grad_() for n, g in zip(names, grads)}
            total += float(hand_loss(fast, qx, qy).detach())
        return total / len(tasks)

    analytic, _ = algorithm.meta_gradients(model.params(), as_batch(tasks))
    theta = {k: v.detach().clone() for k, v in model.params().items()}
    h = 1e-6
    for name in names:
        numeric = torch.zeros_like(theta[name])
        for i in range(theta[name].numel()):
            plus = {k: v.clone() for k, v in theta.items()}
            minus = {k: v.clone() for k, v in theta.items()}
            plus[name].view(-1)[i] += h
            minus[name].view(-1)[i] -= h
            numeric.view(-1)[i] = (meta_objective(plus) - meta_objective(minus)) / (2 * h)
        torch.testing.assert_close(analytic[name], numeric, rtol=1e-6, atol=1e-8)


def test_first_order_maml_drops_exactly_the_second_order_term():
    model = tiny_model()
    alpha = 0.5
    (sx, sy, qx, qy), = tasks = tiny_tasks(1, seed=2)
    names = list(model.params())
    # Independent quantities for one inner step: theta' = theta - alpha * g_s(theta),
    # v = dL_q/dtheta' at theta', and the support Hessian at theta times v (double backward).
    theta = {k: v.detach().clone().requires_grad_() for k, v in model.params().items()}
    g_support = torch.autograd.grad(hand_loss(theta, sx, sy), list(theta.values()), create_graph=True)
    adapted = {n: (theta[n] - alpha * g).detach().requires_grad_() for n, g in zip(names, g_support)}
    v = torch.autograd.grad(hand_loss(adapted, qx, qy), list(adapted.values()))
    hessian_v = torch.autograd.grad(sum((g * vi).sum() for g, vi in zip(g_support, v)), list(theta.values()))
    first_order_expected = dict(zip(names, v))
    second_order_term = {n: -alpha * hv for n, hv in zip(names, hessian_v)}

    second_order, _ = MAML(model, lr=alpha, adapt_steps=1).meta_gradients(model.params(), as_batch(tasks))
    first_order, _ = FOMAML(model, lr=alpha, adapt_steps=1).meta_gradients(model.params(), as_batch(tasks))
    fo_learner = MAML(model, lr=alpha, first_order=True).clone()
    fo_learner.adapt(F.cross_entropy(fo_learner(sx), sy))
    fo_learner_grads = dict(zip(names, torch.autograd.grad(F.cross_entropy(fo_learner(qx), qy), model.parameters())))

    term_size = torch.cat([t.flatten() for t in second_order_term.values()]).norm()
    assert term_size > 0.05 * torch.cat([t.flatten() for t in v]).norm()  # big enough to tell the two apart
    assert_dicts_close(first_order, first_order_expected, rtol=1e-10, atol=1e-12)
    assert_dicts_close(fo_learner_grads, first_order_expected, rtol=1e-10, atol=1e-12)
    assert_dicts_close(second_order, {n: first_order_expected[n] + second_order_term[n] for n in names},
                       rtol=1e-10, atol=1e-12)
    assert_dicts_close({n: second_order[n] - first_order[n] for n in names}, second_order_term,
                       rtol=1e-8, atol=1e-12)


def test_anil_inner_loop_changes_only_the_head():
    model = tiny_model()
    anil = ANIL(model, lr=0.5, adapt_steps=3)
    (sx, sy, qx, qy), = tasks = tiny_tasks(1, seed=3)

    learner = anil.clone()
    learner.adapt(F.cross_entropy(learner(sx), sy))
    adapted = inner_adapt(model, model.params(), sx, sy, steps=3, lr=0.5, adapt_names=anil.adapt_names)
    grads, _ = anil.meta_gradients(model.params(), as_batch(tasks))

    assert anil.adapt_names == ("head.weight", "head.bias")
    for name in model.body_names:
        assert learner.params[name] is model.params()[name]
        assert adapted[name] is model.params()[name]
        assert grads[name].abs().sum() > 0  # the body is still meta-learnt by the outer loop
    for name in model.head_names:
        assert not torch.equal(learner.params[name], model.params()[name])
        assert not torch.equal(adapted[name], model.params()[name])


# --- adaptation leaves the meta-parameters alone -------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_adaptation_never_mutates_meta_parameters(name):
    model = MetaMLP(3, 5, 2, seed=1)
    algorithm = algorithm_create(name, model, **({} if name == "protonet" else {"lr": 0.5}))
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    before = {k: v.detach().clone() for k, v in model.params().items()}
    (sx, sy, qx, _), = tiny_tasks(1, seed=4, dtype=torch.float32)

    if hasattr(algorithm, "clone"):
        learner = algorithm.clone()
        for _ in range(3):
            learner.adapt(F.cross_entropy(learner(sx), sy))
    predictor = adapt(algorithm, model.params(), sx.numpy(), np.array(["b", "a"])[sy.numpy()], steps=5)
    proba = predictor.predict_proba(qx.numpy())

    for n, p in model.params().items():
        assert torch.equal(p, before[n]), n
        assert torch.equal(p.grad, torch.full_like(p, 7.0)), f"{n}.grad was touched"
    # The predictor keeps its own parameters: a later meta-update does not change its answers.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    np.testing.assert_array_equal(predictor.predict_proba(qx.numpy()), proba)
    assert list(predictor.classes_) == ["a", "b"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


# --- ProtoNet and the baselines --------------------------------------------------------------------------------

class IdentityEncoder(nn.Module):
    def forward(self, x: torch.Tensor, embed_only: bool = False) -> torch.Tensor:
        return x


def test_protonet_with_identity_encoder_equals_nearest_class_mean():
    rng = np.random.default_rng(0)
    labels = np.array(["cat", "dog", "eel", "fox", "gnu"])
    support_y = np.repeat(labels[[3, 0, 4, 1, 2]], 3)  # not in sorted order
    support_x = rng.normal(size=(15, 6)).astype(np.float32) + np.repeat(rng.normal(size=(5, 6)) * 2, 3, axis=0)
    query_x = rng.normal(size=(40, 6)).astype(np.float32) * 2

    predictor = adapt(ProtoNet(IdentityEncoder()), {}, support_x, support_y)
    reference = nearest_class_mean(support_x, support_y, query_x)
    distances = predictor.squared_distances(query_x)

    assert list(predictor.classes_) == list(reference.classes) == sorted(labels)
    np.testing.assert_array_equal(predictor.predict(query_x), reference.predictions)
    np.testing.assert_array_equal(np.argsort(distances, axis=1), np.argsort(reference.sq_distances, axis=1))
    np.testing.assert_allclose(distances, reference.sq_distances, rtol=1e-5)
    assert len(set(reference.predictions)) > 1  # the queries are spread over several classes


# --- Reptile -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_tasks", [1, 3])
def test_reptile_update_equals_hand_computed_interpolation(n_tasks):
    model = tiny_model()
    reptile = Reptile(model, lr=0.3, adapt_steps=4)
    epsilon = 0.25
    tasks = tiny_tasks(n_tasks, seed=5)
    theta = {k: v.detach().clone() for k, v in model.params().items()}
    names = list(theta)
    hand_adapted = []
    for sx, sy, _, _ in tasks:
        start = {k: v.clone().requires_grad_() for k, v in theta.items()}
        hand_adapted.append({k: v.detach() for k, v in
                             hand_sgd(start, sx, sy, steps=4, lr=0.3, names=names, create_graph=False).items()})
    expected = {n: theta[n] + epsilon * (sum(a[n] for a in hand_adapted) / n_tasks - theta[n]) for n in names}

    adapted, _, _ = reptile.adapted_batch(model.params(), as_batch(tasks))
    updated = reptile_update(theta, adapted, epsilon)
    grads, _ = reptile.meta_gradients(model.params(), as_batch(tasks))
    sgd_step = {n: theta[n] - epsilon * grads[n] for n in names}

    for t in range(n_tasks):
        assert_dicts_close({n: adapted[n][t] for n in names}, hand_adapted[t], rtol=1e-10, atol=1e-12)
    assert_dicts_close(updated, expected, rtol=1e-10, atol=1e-12)
    assert_dicts_close(sgd_step, expected, rtol=1e-10, atol=1e-12)
    assert any(not torch.allclose(expected[n], theta[n]) for n in names)


# --- vmap over tasks = Python loop over tasks ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_vmapped_task_batch_equals_python_loop(name):
    model = MetaMLP(3, 6, 3, seed=2)
    algorithm = algorithm_create(name, model, **({} if name == "protonet" else {"lr": 0.3, "adapt_steps": 2}))
    batch = as_batch(tiny_tasks(4, seed=6, dtype=torch.float32, n_way=3, shots=2))

    vmapped, vmapped_metrics = algorithm.meta_gradients(model.params(), batch, vectorize=True)
    looped, looped_metrics = algorithm.meta_gradients(model.params(), batch, vectorize=False)

    assert_dicts_close(vmapped, looped, rtol=1e-5, atol=1e-6)
    assert vmapped_metrics["accuracy"] == pytest.approx(looped_metrics["accuracy"])
    assert vmapped_metrics["loss"] == pytest.approx(looped_metrics["loss"], rel=1e-5)
    assert any(g.abs().sum() > 0 for g in vmapped.values())


# --- episodes ------------------------------------------------------------------------------------------------------

def labelled_rows(per_class: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose first feature is the row index, so episodes can be traced back to rows."""
    y = np.concatenate([[label] * n for label, n in per_class.items()])
    X = np.column_stack([np.arange(len(y)), np.zeros(len(y))]).astype(np.float32)
    return X, y


def test_episode_sampler_draws_n_way_k_shot_episodes_from_allowed_classes_only():
    X, y = labelled_rows({c: 8 for c in "abcdefg"})
    sampler = EpisodeSampler(X, y, classes=list("abcde"), n_way=3, k_shot=2, q_query=4, seed=0)

    first_classes = set()
    for _ in range(50):
        episode = sampler.sample()
        support_rows = episode.support_x[:, 0].long().numpy()
        query_rows = episode.query_x[:, 0].long().numpy()

        assert episode.support_x.shape == (6, 2) and episode.query_x.shape == (12, 2)
        assert episode.support_x.dtype == torch.float32
        assert episode.support_y.tolist() == [0, 0, 1, 1, 2, 2]
        assert episode.query_y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
        assert len(set(episode.classes)) == 3 and set(episode.classes) <= set("abcde")
        assert not set(support_rows) & set(query_rows)
        assert len(set(support_rows)) == 6 and len(set(query_rows)) == 12
        # Episode label i means original class classes[i], in support and query alike.
        assert list(y[support_rows]) == list(episode.classes[episode.support_y.numpy()])
        assert list(y[query_rows]) == list(episode.classes[episode.query_y.numpy()])
        first_classes.add(episode.classes[0])
    assert len(first_classes) > 1  # class order (the relabelling) is random


def test_episode_sampler_never_draws_held_out_classes():
    X, y = labelled_rows({str(c): 6 for c in range(10)})
    train, test = class_split(y, n_test_classes=4, seed=3)
    sampler = EpisodeSampler(X, y, classes=train, n_way=5, k_shot=1, q_query=2, seed=0)

    drawn = set()
    batch = sampler.sample_batch(200)
    drawn.update(batch.classes.ravel())
    drawn.update(y[batch.query_x[..., 0].long().numpy().ravel()])

    assert len(test) == 4 and not set(train) & set(test) and set(train) | set(test) == set(y)
    assert drawn == set(train)
    assert class_split(y, n_test_classes=4, seed=3)[1].tolist() == test.tolist()
    assert class_split(y, test_classes=["3", "7"])[1].tolist() == ["3", "7"]


def test_episode_batch_stacks_tasks_for_vmap():
    X, y = labelled_rows({c: 5 for c in "abcd"})
    batch = EpisodeSampler(X, y, n_way=4, k_shot=2, q_query=3, seed=0).sample_batch(7)

    assert batch.support_x.shape == (7, 8, 2) and batch.support_y.shape == (7, 8)
    assert batch.query_x.shape == (7, 12, 2) and batch.query_y.shape == (7, 12)
    assert batch.classes.shape == (7, 4) and batch.n_way == 4 and batch.n_tasks == 7
    assert torch.equal(batch.episode(3).query_x, batch.query_x[3])


def test_episode_sampler_is_deterministic_under_seed():
    X, y = labelled_rows({c: 9 for c in "abcdef"})

    def draws(seed):
        sampler = EpisodeSampler(X, y, n_way=3, k_shot=2, q_query=3, seed=seed)
        return [sampler.sample().support_x[:, 0].tolist() for _ in range(5)]

    other = EpisodeSampler(X, y, n_way=3, k_shot=2, q_query=3, seed=99)
    with_rng = [other.sample(np.random.default_rng(1)).support_x[:, 0].tolist() for _ in range(2)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    assert with_rng[0] == with_rng[1] == draws(1)[0]  # a passed generator replaces the sampler's own


def test_episode_sampler_names_classes_with_too_few_examples():
    X, y = labelled_rows({"spam": 9, "ham": 4, "eggs": 2})
    with pytest.raises(EpisodeError, match=r"need 5 examples per class; too few in 'eggs' \(2\), 'ham' \(4\)"):
        EpisodeSampler(X, y, n_way=2, k_shot=2, q_query=3)


def test_episode_sampler_refuses_more_ways_than_allowed_classes():
    X, y = labelled_rows({c: 9 for c in "abcdef"})
    with pytest.raises(EpisodeError, match=r"5-way episodes need 5 classes; only 3 allowed"):
        EpisodeSampler(X, y, classes=list("abc"), n_way=5, k_shot=1, q_query=1)
    with pytest.raises(EpisodeError, match=r"classes \['z'\] have no examples"):
        EpisodeSampler(X, y, classes=["a", "z"], n_way=2, k_shot=1, q_query=1)
    with pytest.raises(EpisodeError, match="between 1 and 5"):
        class_split(y, n_test_classes=6)
    with pytest.raises(EpisodeError, match=r"test classes \['q'\] do not occur"):
        class_split(y, test_classes=["q"])


# --- training loop ----------------------------------------------------------------------------------------------

def blob_sampler(seed: int = 0) -> EpisodeSampler:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, 5)) * 3
    y = np.repeat(np.arange(8), 12)
    return EpisodeSampler(centres[y] + rng.normal(size=(96, 5)), y, n_way=3, k_shot=1, q_query=3, seed=seed)


def test_meta_train_is_deterministic_and_reports_progress():
    reports = []
    sampler = blob_sampler()  # shared: the second run must not depend on where the first left its generator

    def run():
        algorithm = FOMAML(MetaMLP(5, 8, 3, seed=0), lr=0.3)
        history = meta_train(algorithm, sampler, meta_batch=4, steps=6, meta_lr=1e-2, seed=11,
                             progress=lambda step, total, metrics: reports.append((step, total, set(metrics))))
        return algorithm.meta_params(), history

    rng_before = torch.get_rng_state()
    (params_a, history_a), (params_b, history_b) = run(), run()

    assert_dicts_close(params_a, params_b, rtol=0, atol=0)
    assert history_a == history_b and history_a["steps_done"] == 6 and not history_a["stopped"]
    assert not torch.equal(params_a["head.weight"], MetaMLP(5, 8, 3, seed=0).head.weight)
    assert reports[:6] == [(s, 6, {"loss", "accuracy"}) for s in range(1, 7)]
    assert torch.equal(torch.get_rng_state(), rng_before)


class NoisyInputMLP(MetaMLP):
    """Draws from torch's global RNG in forward (as dropout would); vmap refuses that, a Python loop runs it."""

    def forward(self, x: torch.Tensor, embed_only: bool = False) -> torch.Tensor:
        return super().forward(x + 0.1 * torch.randn_like(x), embed_only)


def test_meta_train_seeds_the_global_rng_locally_for_models_that_draw_from_it():
    sampler = blob_sampler()

    def run():
        algorithm = ProtoNet(NoisyInputMLP(5, 8, 3, seed=0))
        return meta_train(algorithm, sampler, meta_batch=2, steps=3, meta_lr=1e-2, seed=5, vectorize=False)

    with torch.random.fork_rng(devices=[]):  # the caller's RNG in two different states
        torch.manual_seed(1)
        first = run()
        torch.manual_seed(2)
        rng_before = torch.get_rng_state()
        second = run()
        rng_after = torch.get_rng_state()

    assert first["loss"] == second["loss"]
    assert torch.equal(rng_after, rng_before)


def test_meta_train_stops_when_asked():
    algorithm = ProtoNet(MetaMLP(5, 8, 3))
    asked = []

    def should_stop():
        asked.append(1)
        return len(asked) > 3

    history = meta_train(algorithm, blob_sampler(), meta_batch=2, steps=50, meta_lr=1e-3, seed=0,
                         should_stop=should_stop)

    assert history["stopped"] and history["steps_done"] == 3 and len(history["loss"]) == 3


def test_meta_train_refuses_mismatched_model():
    with pytest.raises(NWayMismatch, match="head has 4 outputs, one per class of a 4-way task; the sampler draws 3-way episodes"):
        meta_train(MAML(MetaMLP(5, 8, 4), lr=0.1), blob_sampler(), meta_batch=2, steps=1, meta_lr=1e-3, seed=0)
    with pytest.raises(IncompatibleData, match="takes 6 features per row; the data has 5"):
        meta_train(ProtoNet(MetaMLP(6, 8, 3)), blob_sampler(), meta_batch=2, steps=1, meta_lr=1e-3, seed=0)
    with pytest.raises(IncompatibleData, match="3 labels"):
        adapt(ProtoNet(MetaMLP(5, 8, 2)), MetaMLP(5, 8, 2).params(), np.zeros((4, 5)), ["a", "b", "c"])
    with pytest.raises(UnknownAlgorithm, match="choose one of"):
        algorithm_create("metasgd", MetaMLP(5, 8, 3))


@pytest.mark.parametrize("name", ["maml", "anil", "reptile"])
def test_adapting_to_another_number_of_classes_starts_from_prototypes(name):
    """A 2-way head meets a 3-class support set: with no inner step the prediction is ProtoNet's on the same
    encoder (prototype head), and a few steps change it without touching the meta-parameters."""
    model = MetaMLP(5, 8, 2, seed=3)
    algorithm = algorithm_create(name, model, lr=0.1)
    before = {k: v.detach().clone() for k, v in model.params().items()}
    gen = torch.Generator().manual_seed(0)
    support_x = torch.randn(9, 5, generator=gen)
    support_y = ["b", "a", "c"] * 3
    query = torch.randn(7, 5, generator=gen)

    unadapted = adapt(algorithm, model.params(), support_x, support_y, steps=0)
    prototypes = adapt(ProtoNet(model), model.params(), support_x, support_y)
    adapted = adapt(algorithm, model.params(), support_x, support_y, steps=3)

    assert list(unadapted.classes_) == ["a", "b", "c"] == list(adapted.classes_)
    np.testing.assert_allclose(unadapted.predict_proba(query), prototypes.predict_proba(query), atol=1e-6)
    assert adapted.params_["head.weight"].shape == (3, 8)
    assert not np.allclose(adapted.predict_proba(query), unadapted.predict_proba(query))
    for key, value in model.params().items():
        assert torch.equal(value, before[key])


# --- serialisation ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_artifact_round_trip_gives_identical_predictions(name):
    sampler = blob_sampler(1)
    hyper = {} if name == "protonet" else {"lr": 0.3, "adapt_steps": 2}
    algorithm = algorithm_create(name, ResidualMLP(5, 8, 3, seed=4), **hyper)
    meta_train(algorithm, sampler, meta_batch=2, steps=3, meta_lr=1e-2, seed=0)
    episode = sampler.sample()

    loaded = meta_learner_from_bytes(meta_learner_to_bytes(algorithm))
    before = adapt(algorithm, algorithm.meta_params(), episode.support_x, episode.support_y).predict_proba(
        episode.query_x)
    after = adapt(loaded, loaded.meta_params(), episode.support_x, episode.support_y).predict_proba(episode.query_x)

    assert type(loaded) is type(algorithm) and loaded.hyperparameters() == algorithm.hyperparameters()
    assert type(loaded.model) is ResidualMLP and loaded.model.config() == algorithm.model.config()
    np.testing.assert_array_equal(after, before)


def test_artifact_from_other_bytes_is_refused():
    buffer = io.BytesIO()
    torch.save({"format": 99}, buffer)
    with pytest.raises(MetaArtifactError, match="not a meta-learner artifact of format 1"):
        meta_learner_from_bytes(buffer.getvalue())
    with pytest.raises(MetaArtifactError, match="cannot save a IdentityEncoder"):
        meta_learner_to_bytes(ProtoNet(IdentityEncoder()))


# --- learning on real data ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    """8x8 digits scaled to [0, 1]; digits 2, 4, 5, 7 held out (class_split seed 0), 6 classes to meta-train on."""
    X, y = load_digits(return_X_y=True)
    train, test = class_split(y, n_test_classes=4, seed=0)
    X = (X / 16.0).astype(np.float32)
    return {
        "train": EpisodeSampler(X, y, classes=train, n_way=4, k_shot=1, q_query=10, seed=0),
        "test": EpisodeSampler(X, y, classes=test, n_way=4, k_shot=1, q_query=15, seed=1),
        "train_eval": EpisodeSampler(X, y, classes=train, n_way=4, k_shot=1, q_query=15, seed=1),
    }


def episode_accuracy(sampler, method) -> float:
    return evaluate_episodes(method, sampler, episodes=200, seed=5)["accuracy"]


def adapted_accuracy(algorithm, sampler) -> float:
    params = algorithm.meta_params()
    return episode_accuracy(sampler, lambda sx, sy, qx: adapt(algorithm, params, sx, sy).predict(qx))


def test_meta_learning_on_digits_beats_chance_on_held_out_classes(digits):
    """4-way 1-shot on unseen digits (chance 0.25); the same 200 test episodes for every method."""
    ncm = episode_accuracy(digits["test"], lambda sx, sy, qx: nearest_class_mean(sx, sy, qx).predictions)
    scratch = episode_accuracy(digits["test"], lambda sx, sy, qx: fit_from_scratch(sx, sy).predict(qx))
    protonet = ProtoNet(ResidualMLP(64, 64, 4, seed=0))
    seen_before = adapted_accuracy(protonet, digits["train_eval"])
    meta_train(protonet, digits["train"], meta_batch=8, steps=30, meta_lr=1e-3, seed=0)
    fomaml = FOMAML(ResidualMLP(64, 64, 4, seed=0), lr=0.5, adapt_steps=3)
    meta_train(fomaml, digits["train"], meta_batch=8, steps=100, meta_lr=3e-3, seed=0)

    results = {
        "nearest_class_mean": ncm, "logistic_from_scratch": scratch,
        "protonet": adapted_accuracy(protonet, digits["test"]), "fomaml": adapted_accuracy(fomaml, digits["test"]),
        "protonet_on_training_classes_before": seen_before,
        "protonet_on_training_classes_after": adapted_accuracy(protonet, digits["train_eval"]),
    }
    print("digits 4-way 1-shot accuracy:", {k: round(v, 3) for k, v in results.items()})

    assert results["protonet_on_training_classes_after"] > seen_before + 0.03  # meta-training did learn
    assert results["protonet"] >= ncm - 0.02
    assert results["fomaml"] > 0.45
    assert ncm > 0.6  # the data and the evaluation are sound


# --- model selection on validation classes -------------------------------------------------------------------------

def blob_split(seed: int = 0) -> tuple[EpisodeSampler, EpisodeSampler]:
    """3-way 1-shot episodes of 8 training blobs, and of 4 other blobs for validation."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, 5)) * 1.5
    y = np.repeat(np.arange(12), 12)
    X = centres[y] + rng.normal(size=(144, 5))
    return (EpisodeSampler(X, y, classes=range(8), n_way=3, k_shot=1, q_query=3, seed=seed),
            EpisodeSampler(X, y, classes=range(8, 12), n_way=3, k_shot=1, q_query=3, seed=seed))


def validation_accuracy(algorithm, sampler, *, seed: int) -> float:
    params = algorithm.meta_params()
    return evaluate_episodes(lambda sx, sy, qx: adapt(algorithm, params, sx, sy).predict(qx), sampler,
                             episodes=30, seed=seed)["accuracy"]


def test_meta_train_with_validation_ends_with_the_best_validated_meta_parameters():
    train, validation = blob_split()
    algorithm = ProtoNet(ResidualMLP(5, 16, 3, seed=0))
    snapshots = {0: {k: v.detach().clone() for k, v in algorithm.meta_params().items()}}
    reports = []

    def progress(step, total, metrics):
        reports.append((step, set(metrics)))
        if "validation_accuracy" in metrics:
            snapshots[step] = {k: v.detach().clone() for k, v in algorithm.meta_params().items()}

    history = meta_train(algorithm, train, meta_batch=4, steps=20, meta_lr=1e-2, seed=0, progress=progress,
                         validation=validation, validate_every=2, validation_episodes=30)

    scores = [v["accuracy"] for v in history["validation"]]
    assert [v["step"] for v in history["validation"]] == list(range(0, 21, 2))
    assert 0 < history["best_step"] < 20  # this arrangement peaks in the middle, so restoring is observable
    assert history["best_step"] == history["validation"][int(np.argmax(scores))]["step"]
    assert_dicts_close(algorithm.meta_params(), snapshots[history["best_step"]], rtol=0, atol=0)
    assert not torch.equal(algorithm.meta_params()["body.0.weight"], snapshots[20]["body.0.weight"])
    assert validation_accuracy(algorithm, validation, seed=0) == max(scores)
    assert reports[1] == (2, {"loss", "accuracy", "validation_accuracy"}) and reports[0] == (1, {"loss", "accuracy"})


def test_meta_train_keeps_the_untrained_start_when_training_only_hurts_and_stops_after_patience():
    train, validation = blob_split()
    algorithm = ProtoNet(ResidualMLP(5, 16, 3, seed=0))  # identity start: nearest class mean, hard to beat here
    start = {k: v.detach().clone() for k, v in algorithm.meta_params().items()}

    history = meta_train(algorithm, train, meta_batch=4, steps=50, meta_lr=1.0, seed=0,  # a step size that wrecks it
                         validation=validation, validate_every=2, validation_episodes=30, patience=2)

    assert history["best_step"] == 0
    assert [v["step"] for v in history["validation"]] == [0, 2, 4]
    assert history["steps_done"] == 4 and len(history["loss"]) == 4
    assert_dicts_close(algorithm.meta_params(), start, rtol=0, atol=0)


def test_meta_train_without_validation_has_no_validation_history():
    train, _ = blob_split()
    history = meta_train(ProtoNet(ResidualMLP(5, 16, 3, seed=0)), train, meta_batch=2, steps=3, meta_lr=1e-2, seed=0)

    assert "validation" not in history and "best_step" not in history and history["steps_done"] == 3


# --- the default recipe ------------------------------------------------------------------------------------------

def test_meta_train_default_standardises_with_training_classes_and_round_trips_on_raw_features():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(12, 5)) * 1.5
    y = np.repeat(np.array([f"c{i}" for i in range(12)]), 12)
    X = (centres[np.repeat(np.arange(12), 12)] + rng.normal(size=(144, 5))) * 1000.0 + 5000.0  # far from standard

    meta, history = meta_train_default(X, y, algorithm="protonet", n_way=3, k_shot=1, q_query=3, seed=0, steps=10,
                                       hidden=16, validate_every=5, validation_episodes=20)

    train, held_out = history["train_classes"], history["validation_classes"]
    assert len(held_out) == 3 and not set(train) & set(held_out) and len(train) + len(held_out) == 12
    rows = np.isin(y, train)
    assert torch.allclose(meta.model.input_mean.double(), torch.from_numpy(X[rows].mean(axis=0)), rtol=1e-6)
    assert torch.allclose(meta.model.input_scale.double(), torch.from_numpy(X[rows].std(axis=0)), rtol=1e-6)
    assert [v["step"] for v in history["validation"]] == [0, 5, 10]

    support = np.isin(np.arange(144) % 12, [0]) & np.isin(y, ["c0", "c1", "c2"])
    query = np.isin(y, ["c0", "c1", "c2"]) & ~support
    predictor = adapt(meta, meta.meta_params(), X[support], y[support])
    loaded = meta_learner_from_bytes(meta_learner_to_bytes(meta))
    again = adapt(loaded, loaded.meta_params(), X[support], y[support])
    assert np.array_equal(again.predict_proba(X[query]), predictor.predict_proba(X[query]))
    assert np.mean(predictor.predict(X[query]) == y[query]) > 0.6  # raw features in, standardised inside


def test_meta_train_default_refuses_unknown_hyperparameters_and_too_few_classes():
    X, y = labelled_rows({c: 6 for c in "abcd"})
    with pytest.raises(RecipeError, match=r"unknown hyper-parameters \['hiddden'\]"):
        meta_train_default(X, y, n_way=2, k_shot=1, q_query=1, steps=1, hiddden=8)
    with pytest.raises(RecipeError, match="5-way meta-training needs at least 5 classes; the data has 4"):
        meta_train_default(X, y, n_way=5, k_shot=1, q_query=1, steps=1)
