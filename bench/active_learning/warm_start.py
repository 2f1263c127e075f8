"""Does a meta warm start improve the first 50 labels' learning curve? The benchmark's warm-start section.

    .venv/bin/python -m bench.active_learning.warm_start                  # every task, 10 seeds
    .venv/bin/python -m bench.active_learning.warm_start --tasks digits --seeds 2 \\
        --results-dir bench/active_learning/work/dev

A new project that names a meta-model as its warm start gets the product's
rule (`learners.meta.warm_start`): once every label has `MIN_PER_LABEL`
examples, the meta-model adapted to the labelled items orders the queue (the
arm's strategy applied to its probabilities) and is the model the project
would use, so its test accuracy is the one recorded; after each retrain
`compare_on_folds` measures the arm's own estimator against it on the
labelled items, and the first time `own_model_wins` the own model takes over
for good.

A meta-model must never have seen the project's classes, so every task holds
classes out: per seed, `class_split` picks the project's classes among a data
set's; the meta-model is trained on the others (and on every class of
`sources`, earlier projects in the same feature space). Plain arms and
warm-start arms share the split, the seed set and the label counts.
Writes warm_start.json and plots/warm_start.png, and the warm-start section
of RESULTS.md (`warm_start_report.py`).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:  # also runnable as a script
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.active_learning import datasets, run, simulation, warm_start_report  # noqa: E402
from bench.harness import names_option  # noqa: E402
from learners.meta import adapt, class_split  # noqa: E402
from learners.meta.recipes import meta_train_default  # noqa: E402
from learners.meta.warm_start import compare_on_folds, own_model_wins  # noqa: E402
from learners.ml.estimators import estimator_create  # noqa: E402

ESTIMATOR = "logistic_regression"
BUDGET = 50  # the first 50 labels, seed set included
BATCH = 1  # one label per round: accuracy at every label count
MIN_PER_LABEL = 1  # K: the seed set already holds one example of each label, so the warm start applies from it
WARM = "+meta"  # arm suffix: the strategy with the meta warm start
CONTROL = "+ncm"  # the same rule with the recipe's untrained start: nearest class mean on standardised features
ARMS = ["random", "margin", f"random{WARM}", f"margin{WARM}", f"margin{CONTROL}"]
RESULTS_FILE = "warm_start.json"


@dataclass(frozen=True)
class WarmStartTask:
    """A project labelling `n_target_classes` held-out classes of `dataset`, warm-started from the rest.

    The meta-model trains on `n_way`-way `k_shot`-shot episodes of the dataset's other classes and of
    every class of `sources` (data sets featurised the same way), for `steps` outer steps.
    """

    name: str
    dataset: str
    title: str
    n_target_classes: int
    n_way: int
    k_shot: int
    q_query: int
    steps: int
    sources: tuple[str, ...] = ()


TASKS: dict[str, WarmStartTask] = {task.name: task for task in [
    WarmStartTask("leaf", "leaf", "12 held-out species of 32, meta-trained on the other 20", n_target_classes=12,
                  n_way=5, k_shot=1, q_query=10, steps=300),
    WarmStartTask("digits", "digits", "5 held-out digits, meta-trained on the other 5", n_target_classes=5,
                  n_way=3, k_shot=1, q_query=10, steps=300),
    WarmStartTask("bbc_news", "bbc_news", "3 held-out topics of 5, meta-trained on the other 2 and on the "
                  "food reviews' 2 classes", n_target_classes=3, n_way=2, k_shot=1, q_query=10, steps=300,
                  sources=("food_reviews",)),
]}


AdaptFn = Callable[[np.ndarray, np.ndarray], Any]


class Handover:
    """The product's warm-start rule over one learning curve (`simulation.run_curve`'s `round_model`).

    Parameters
    ----------
    adapt_fn : callable
        ``adapt_fn(X, y)``: the meta-model adapted to these labelled rows (a fitted predictor).
    own_estimator : callable
        ``own_estimator(random_state)``: the arm's estimator, unfitted (`compare_on_folds` clones it).
    classes : sequence
        The project's labels; the warm start waits until each has `min_per_label` examples.
    min_per_label : int
        K.

    Attributes
    ----------
    used : list of str
        Per round, ``"meta"`` or ``"own"``: whose model ordered the queue and was scored.
    handed_over_at : int or None
        The label count at which the own model won and took over for good.
    comparisons : list of dict
        ``labels``, ``own`` and ``adapted`` held-out accuracy of every comparison made.
    """

    def __init__(self, *, adapt_fn: AdaptFn, own_estimator: Callable[[int], Any], classes: Sequence[Any],
                 min_per_label: int = MIN_PER_LABEL) -> None:
        self.adapt_fn = adapt_fn
        self.own_estimator = own_estimator
        self.classes = np.asarray(classes)
        self.min_per_label = min_per_label
        self.used: list[str] = []
        self.handed_over_at: int | None = None
        self.comparisons: list[dict] = []

    def model_for_round(self, X_labelled: np.ndarray, y_labelled: np.ndarray, own_model: Any,
                        random_state: int) -> Any:
        """The adapted meta-model while it holds the queue, else `own_model` (fitted on the same rows)."""
        enough = all(np.sum(y_labelled == label) >= self.min_per_label for label in self.classes)
        if self.handed_over_at is None and enough:
            comparison = compare_on_folds(X_labelled, y_labelled, own_estimator=self.own_estimator(random_state),
                                          adapt_fn=self.adapt_fn, seed=random_state)
            self.comparisons.append({"labels": len(y_labelled), "own": comparison["own_accuracy"],
                                     "adapted": comparison["adapted_accuracy"]})
            if own_model_wins(comparison):
                self.handed_over_at = len(y_labelled)
            else:
                self.used.append("meta")
                return self.adapt_fn(X_labelled, y_labelled)
        self.used.append("own")
        return own_model


def meta_model_train(X: np.ndarray, y: np.ndarray, task: WarmStartTask, seed: int, *,
                     steps: int | None = None) -> tuple[Any, dict]:
    """The product's recipe (`meta_train_default`, ProtoNet) on (X, y), the project's predecessors' classes.

    ``steps=0`` is the control: the recipe's untrained start, nearest class mean on standardised features.
    """
    return meta_train_default(X, y, algorithm="protonet", n_way=task.n_way, k_shot=task.k_shot,
                              q_query=task.q_query, seed=seed, steps=task.steps if steps is None else steps)


def adapter(algorithm: Any) -> AdaptFn:
    """``adapt_fn`` for `Handover`: `learners.meta.adapt` with the algorithm's current meta-parameters."""
    def adapt_fn(X: np.ndarray, y: np.ndarray) -> Any:
        return adapt(algorithm, algorithm.meta_params(), X, y)
    return adapt_fn


def task_data(task: WarmStartTask, seed: int) -> dict:
    """The seed's held-out classes of `task.dataset` (the project) and everything else (the meta-training data)."""
    X, names = datasets.features_load(task.dataset)
    source_classes, target_classes = class_split(names, n_test_classes=task.n_target_classes, seed=seed)
    source = np.isin(names, source_classes)
    blocks, keys = [X[source]], [np.char.add(f"{task.dataset}:", names[source].astype(str))]
    featuriser = datasets.dataset_spec(task.dataset).featuriser
    for other in task.sources:
        if datasets.dataset_spec(other).featuriser != featuriser:
            raise datasets.DatasetError(f"source {other} is not featurised with {featuriser} like {task.dataset}")
        X_other, names_other = datasets.features_load(other)
        blocks.append(X_other)
        keys.append(np.char.add(f"{other}:", names_other.astype(str)))
    target = ~source
    _, y_target = np.unique(names[target], return_inverse=True)
    return {"X_source": np.concatenate(blocks), "y_source": np.concatenate(keys), "X": X[target], "y": y_target,
            "target_classes": [str(c) for c in target_classes]}


def arm_parts(key: str) -> tuple[str, str]:
    """("margin", "+meta") for "margin+meta"; ("margin", "") for plain "margin"."""
    strategy, plus, variant = key.partition("+")
    return strategy, plus + variant


def run_job(task_name: str, seed: int, arm_keys: list[str]) -> dict:
    """Meta-train on the seed's source classes, then every arm on the held-out classes' split."""
    started, cpu_started = time.perf_counter(), time.process_time()
    warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
    task = TASKS[task_name]
    data = task_data(task, seed)
    t0 = time.perf_counter()
    algorithm, history = meta_model_train(data["X_source"], data["y_source"], task, seed)
    meta_seconds = time.perf_counter() - t0
    untrained, _ = meta_model_train(data["X_source"], data["y_source"], task, seed, steps=0)
    adapters = {WARM: adapter(algorithm), CONTROL: adapter(untrained)}
    X, y = data["X"], data["y"]
    pool, test, seed_set = simulation.split_and_seed_set(y, seed)
    X_pool, y_pool, X_test, y_test = X[pool], y[pool], X[test], y[test]
    schedule = simulation.label_schedule(len(seed_set), BATCH, min(BUDGET, len(pool)))
    validation = {v["step"]: v["accuracy"] for v in history.get("validation", [])}
    result: dict = {
        "task": task_name, "seed": seed, "target_classes": data["target_classes"],
        "source_classes": len(np.unique(data["y_source"])), "source_items": len(data["y_source"]),
        "pool": len(pool), "test": len(test), "seed_set": len(seed_set), "labels": schedule,
        "meta_training": {"seconds": meta_seconds, "steps": history["steps_done"],
                          "best_step": history.get("best_step"), "validation_classes": len(history["validation_classes"]),
                          "train_classes": len(history["train_classes"]),
                          "validation_untrained": validation.get(0),
                          "validation_kept": validation.get(history.get("best_step"))},
        "full_accuracy": simulation.full_data_accuracy(ESTIMATOR, X_pool, y_pool, X_test, y_test, seed),
        "arms": {},
    }
    for key in arm_keys:
        strategy, variant = arm_parts(key)
        handover = None if not variant else Handover(
            adapt_fn=adapters[variant], own_estimator=lambda rs: estimator_create(ESTIMATOR, random_state=rs),
            classes=np.unique(y_pool))
        t0 = time.perf_counter()
        curve = simulation.run_curve(simulation.Arm(strategy, ESTIMATOR), X_pool, y_pool, X_test, y_test, seed_set,
                                     schedule, seed, round_model=handover)
        curve["seconds"] = time.perf_counter() - t0
        if handover is not None:
            curve.update({"used": handover.used, "handed_over_at": handover.handed_over_at,
                          "comparisons": handover.comparisons})
        result["arms"][key] = curve
        print(f"  {task_name} seed {seed}: {key:<14} first {curve['accuracy'][0]:.3f} last "
              f"{curve['accuracy'][-1]:.3f}" + (f" handover at {handover.handed_over_at}" if handover else "")
              + f" in {curve['seconds']:.1f} s", flush=True)
    result["seconds"] = time.perf_counter() - started
    result["cpu_seconds"] = time.process_time() - cpu_started
    return result


def code_version() -> dict:
    """`run.code_version` plus a fingerprint of learners/meta, which the warm start also measures."""
    version = run.code_version()
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "learners/meta"], cwd=ROOT, capture_output=True,
                               text=True, timeout=10).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        dirty = []
    version["uncommitted"] = [path for path in version["uncommitted"] if not path.endswith(RESULTS_FILE)]
    version["uncommitted"] += [line[3:] for line in dirty]
    fingerprint = hashlib.sha256(version["fingerprint"].encode())
    for path in sorted((ROOT / "learners" / "meta").glob("*.py")):
        fingerprint.update(path.name.encode() + path.read_bytes())
    version["fingerprint"] = fingerprint.hexdigest()[:16]
    return version


def write_outputs(warm: dict, results_dir: Path) -> None:
    """warm_start.json, plots/warm_start.png, and RESULTS.md (the whole report when results.json is there)."""
    warm["summary"] = warm_start_report.summarise(warm["jobs"])
    (results_dir / RESULTS_FILE).write_text(json.dumps(warm, indent=1) + "\n")
    warm_start_report.plot(results_dir / "plots" / "warm_start.png", warm)
    main_results = results_dir / "results.json"
    if main_results.exists():
        run.write_outputs(json.loads(main_results.read_text()), results_dir, with_plots=False)
    else:
        (results_dir / "RESULTS.md").write_text("\n".join(warm_start_report.section(warm)) + "\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated tasks (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=10, help="seeds per task: 0..N-1 (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default %(default)s)")
    parser.add_argument("--results-dir", default=str(HERE), help="where warm_start.json, plots/ and RESULTS.md go")
    args = parser.parse_args(argv)
    args.tasks = names_option(parser, args.tasks, TASKS, "task(s)")
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    run_lock = run.run_lock_take()
    if run_lock is None:
        return 2
    started = time.perf_counter()
    needed = dict.fromkeys(d for name in args.tasks for d in (TASKS[name].dataset, *TASKS[name].sources))
    for name in needed:
        datasets.features_prepare(name, log=run.log)
    warm: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([".venv/bin/python -m bench.active_learning.warm_start",
                             *(argv if argv is not None else sys.argv[1:])]),
        "machine": run.machine(), "code": code_version(),
        "settings": {"tasks": {name: {**TASKS[name].__dict__, "sources": list(TASKS[name].sources)}
                               for name in args.tasks},
                     "seeds": args.seeds, "seed_values": list(range(args.seeds)), "arms": ARMS,
                     "estimator": ESTIMATOR, "budget": BUDGET, "batch": BATCH, "min_per_label": MIN_PER_LABEL,
                     "test_fraction": simulation.TEST_FRACTION, "jobs": args.jobs},
        "jobs": [],
    }
    work = [(name, seed) for name in args.tasks for seed in range(args.seeds)]
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"
    run.log(f"{len(args.tasks)} tasks x {args.seeds} seeds x {len(ARMS)} arms in {args.jobs} worker processes")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context, initializer=run._worker_init) as executor:
        futures = {executor.submit(run_job, name, seed, ARMS): (name, seed) for name, seed in work}
        for done, future in enumerate(as_completed(futures), start=1):
            job = future.result()
            warm["jobs"].append(job)
            warm["jobs"].sort(key=lambda j: (args.tasks.index(j["task"]), j["seed"]))
            warm["run_seconds"] = time.perf_counter() - started
            run.log(f"[{done}/{len(work)}] {job['task']} seed {job['seed']} done in {job['seconds']:.0f} s "
                    f"(meta-training {job['meta_training']['seconds']:.0f} s)")
    warm["run_seconds"] = time.perf_counter() - started
    warm["code_at_end"] = code_version()
    if warm["code_at_end"]["fingerprint"] != warm["code"]["fingerprint"]:
        run.log("WARNING: the measured code changed during the run; rerun on a quiet checkout.")
    write_outputs(warm, results_dir)
    run.log(f"done in {warm['run_seconds'] / 60:.1f} min: {results_dir / 'RESULTS.md'}")
    for line in warm_start_report.headline(warm):
        run.log(line.replace("**", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
