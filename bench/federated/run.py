"""How well does the federated runtime learn, and what does each layer cost? Seven measurements on real digits.

    .venv/bin/python -m bench.federated.run                       # everything (make bench-federated)
    .venv/bin/python -m bench.federated.run --sections fedavg,async
    .venv/bin/python -m bench.federated.run --quick               # smoke run, < 1 min, writes under work/quick

Sections: fedavg (strategies vs centralised), async (FedBuff vs sync with
stragglers), hierarchy (regions and int8 vs coordinator ingress), secagg
(secure-aggregation bytes), robust (20% attackers), privacy (accuracy vs
epsilon), scale (100 to 10,000 clients per round). Writes results.json and
RESULTS.md; README.md explains the method.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:  # also runnable as a script: bench/federated/run.py
    sys.path.insert(0, str(ROOT))

for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # before numpy and torch load: one thread each, as the timings assume

from bench.federated import (  # noqa: E402
    report,
    section_async,
    section_fedavg,
    section_hierarchy,
    section_privacy,
    section_robust,
    section_scale,
    section_secagg,
)
from bench.federated.recipe import Context, Recipes  # noqa: E402
from bench.harness import log, machine_facts, names_option, results_finish, unwind_on_signals  # noqa: E402

SECTIONS = {"fedavg": section_fedavg, "async": section_async, "hierarchy": section_hierarchy,
            "secagg": section_secagg, "robust": section_robust, "privacy": section_privacy, "scale": section_scale}
PACKAGES = ["numpy", "scikit-learn", "torch", "opacus", "cryptography"]
QUICK_DIR = HERE / "work" / "quick"


def machine() -> dict[str, Any]:
    import torch

    return {**machine_facts(PACKAGES), "torch_threads": torch.get_num_threads()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated (default: all seven)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: few rounds, one seed, small grids; results go to work/quick unless "
                             "--results-dir says otherwise")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default 3, quick 1)")
    parser.add_argument("--results-dir", default=None, help="where results.json and RESULTS.md go")
    parser.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from results.json")
    args = parser.parse_args(argv)
    args.sections = names_option(parser, args.sections, SECTIONS, "section(s)")
    args.seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    args.results_dir = Path(args.results_dir) if args.results_dir else (QUICK_DIR if args.quick else HERE)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results_dir: Path = args.results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    results_path = results_dir / "results.json"
    if args.render_only:
        (results_dir / "RESULTS.md").write_text(report.render(json.loads(results_path.read_text())))
        return 0
    unwind_on_signals()
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    given = sys.argv[1:] if argv is None else argv
    command = "make bench-federated" if not given else " ".join([".venv/bin/python -m bench.federated.run", *given])
    seeds = list(range(args.seeds))
    fedavg_rounds = section_fedavg.SETTINGS["quick" if args.quick else "full"]["rounds"]
    ctx = Context(quick=args.quick, seeds=seeds, log=log,
                  recipes=Recipes(rounds=fedavg_rounds, seeds=seeds, quick=args.quick, log=log))
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "command": command,
        "machine": machine(), "settings": {"quick": args.quick, "seeds": seeds, "sections": args.sections},
        "sections": {},
    }
    partial = set(args.sections) != set(SECTIONS)
    if partial and results_path.exists():
        # a partial rerun keeps the other sections of the last run (each section carries its own date)
        previous = json.loads(results_path.read_text())
        if previous.get("settings", {}).get("quick") == args.quick:
            results["sections"] = previous.get("sections", {})
            results["recipes"] = previous.get("recipes", {})
            results["previous_run"] = {k: previous.get(k) for k in ("date", "command", "run_seconds")}
    for name in args.sections:
        log(f"section {name}")
        section_started = time.perf_counter()
        out = SECTIONS[name].run(ctx)
        out["seconds"] = time.perf_counter() - section_started
        out["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        results["sections"][name] = out
        results["recipes"] = {**results.get("recipes", {}), **ctx.recipes.as_dict()}
        results["run_seconds"] = time.perf_counter() - started
        results_path.write_text(json.dumps(results, indent=1) + "\n")
        log(f"section {name} done in {out['seconds']:.0f} s")
    results_finish(results, results_dir, started, report.render, report.headline)
    return 0


if __name__ == "__main__":
    sys.exit(main())
