"""RESULTS.md from results.json: the headline, where active learning does not beat random, then the tables."""
from __future__ import annotations

from bench.active_learning import warm_start_report
from bench.active_learning.metrics import SAVES_LABELS_RATIO, TARGET_FRACTION, baseline_key

DEFAULT_STRATEGY = "margin"  # the workbench's default query strategy (learners.ml.strategies)
NOISY = 0.4  # a baseline whose labels-to-target std exceeds this share of its mean makes the ratio uncertain


def _pm(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _labels(arm: dict, budget: int) -> str:
    if arm["labels_mean"] is not None:
        return f"{arm['labels_mean']:.0f} ± {arm['labels_std']:.0f}"
    if not arm["seeds"]:
        return "-"
    return f"> {budget} ({arm['reached']}/{arm['seeds']} seeds reached)"


def _ratio(arm: dict) -> str:
    if arm["ratio"] is None:
        return "-"
    return f"≤ {arm['ratio']:.0%}" if arm["ratio_is_upper_bound"] else f"{arm['ratio']:.0%}"


def _delta(key: str, arm: dict) -> str:
    if key.startswith("random") or arm["aulc_delta_mean"] is None:
        return "-"
    return f"{arm['aulc_delta_mean']:+.3f} ± {arm['aulc_delta_std']:.3f} ({arm['seeds_won']}/{arm['seeds_compared']})"


def _verdict(key: str, arm: dict) -> str:
    if key.startswith("random"):
        return "baseline"
    if arm["beats_random"] is None:
        return "-"
    return "yes" if arm["beats_random"] else "**no**"


def headline(results: dict) -> list[str]:
    """The ≤ 60% summary and, in plain words, every data set and arm where active learning does not beat random."""
    summary = results["summary"]
    lines = []
    saved = [name for name, s in summary.items() if s["best"] and s["best"]["saves_labels"]]
    lines.append(f"**On {len(saved)} of {len(summary)} data sets the best strategy needs ≤ "
                 f"{SAVES_LABELS_RATIO:.0%} of random's labels to reach {TARGET_FRACTION:.0%} of full-data "
                 f"accuracy**" + (f" ({', '.join(saved)})." if saved else "."))
    default = [name for name, s in summary.items() if DEFAULT_STRATEGY in s["arms"]
               and s["arms"][DEFAULT_STRATEGY]["ratio"] is not None
               and s["arms"][DEFAULT_STRATEGY]["ratio"] <= SAVES_LABELS_RATIO]
    if any(DEFAULT_STRATEGY in s["arms"] for s in summary.values()):
        lines.append("")
        lines.append(f"The best strategy is picked after the fact from up to {_n_strategies(summary)} on noisy "
                     f"estimates, which flatters it; the workbench's default strategy `{DEFAULT_STRATEGY}` alone "
                     f"needs ≤ {SAVES_LABELS_RATIO:.0%} of random's labels on {len(default)} of {len(summary)} "
                     "data sets" + (f" ({', '.join(default)})." if default else "."))
    lines.append("")
    for name, s in summary.items():
        best = s["best"]
        random = s["arms"].get("random")
        random_text = _labels(random, s["budget"]) if random else "-"
        if best is None:
            lines.append(f"- **{name}**: no strategy reached the target in every seed with a ratio to random "
                         f"(random: {random_text} labels).")
            continue
        arm = s["arms"][best["key"]]
        baseline = s["arms"].get(baseline_key(best["key"]))
        baseline_text = _labels(baseline, s["budget"]) if baseline else "-"
        text = (f"- **{name}**: best `{best['key']}` reaches the target with {_labels(arm, s['budget'])} labels "
                f"vs `{baseline_key(best['key'])}`'s {baseline_text} (ratio {_ratio(arm)}; fewer labels than "
                f"random in {arm['seeds_fewer_labels']} of {arm['seeds_compared']} seeds).")
        if baseline and baseline["labels_mean"] and baseline["labels_std"] > NOISY * baseline["labels_mean"]:
            text += (f" `{baseline_key(best['key'])}`'s labels to target vary a lot between seeds "
                     f"(± {baseline['labels_std']:.0f}), so this ratio is uncertain.")
        lines.append(text)
    lines += ["", "### Where active learning does not beat random", ""]
    lines.append(f"An arm beats random on a data set when its AULC is higher than random's (paired over seeds, same "
                 f"estimator) **and** it reaches {TARGET_FRACTION:.0%} of full-data accuracy with fewer labels on "
                 f"average (or random does not reach it in every seed and the arm does).")
    lines.append("")
    for name, s in summary.items():
        losers = [key for key, arm in s["arms"].items() if not key.startswith("random") and not arm["beats_random"]]
        if not losers:
            lines.append(f"- **{name}**: every strategy beats random.")
            continue
        worse = [k for k in losers if (s["arms"][k]["aulc_delta_mean"] or 0) <= 0]
        text = f"- **{name}**: {len(losers)} of {len(s['arms']) - _n_random(s)} strategies do not beat random: "
        text += ", ".join(f"`{k}` (ΔAULC {s['arms'][k]['aulc_delta_mean']:+.3f}, labels ratio "
                          f"{_ratio(s['arms'][k])})" if s["arms"][k]["aulc_delta_mean"] is not None else f"`{k}`"
                          for k in losers) + "."
        if worse:
            text += f" Lower AULC than random: {', '.join(f'`{k}`' for k in worse)}."
        if s["best"] is None or not s["best"]["saves_labels"]:
            text += f" No strategy gets to {SAVES_LABELS_RATIO:.0%} of random's labels here."
        early = [k for k, arm in s["arms"].items() if k.startswith("random") and arm["labels_mean"] is not None
                 and arm["labels_mean"] <= _early(s)]
        if early:
            text += (f" (`{'`, `'.join(early)}` reach{'es' if len(early) == 1 else ''} the target within two rounds, "
                     f"≤ {_early(s)} labels: this target leaves almost no room for a saving; AULC is the fairer "
                     "comparison here.)")
        lines.append(text)
    return lines


def by_strategy(results: dict) -> list[str]:
    """One row per arm across data sets: on how many it beats random, its ΔAULC and labels ratio on each."""
    summary = results["summary"]
    keys = list(dict.fromkeys(k for s in summary.values() for k in s["arms"] if not k.startswith("random")))
    names = list(summary)
    lines = ["| arm | beats random on | " + " | ".join(names) + " |", "|---|--:|" + "--:|" * len(names)]
    for key in keys:
        cells, wins, counted = [], 0, 0
        for name in names:
            arm = summary[name]["arms"].get(key)
            if arm is None or arm["aulc_delta_mean"] is None:
                cells.append("-")
                continue
            counted += 1
            wins += bool(arm["beats_random"])
            cell = f"{arm['aulc_delta_mean']:+.3f} / {_ratio(arm)}"
            cells.append(cell if arm["beats_random"] else f"**{cell}**")
        lines.append(f"| `{key}` | {wins} of {counted} | " + " | ".join(cells) + " |")
    return lines


def _early(s: dict) -> int:
    """The label count after the seed set and two rounds."""
    return s["labels"][min(2, len(s["labels"]) - 1)]


def _n_strategies(summary: dict) -> int:
    return max(len(s["arms"]) - _n_random(s) for s in summary.values())


def _n_random(s: dict) -> int:
    return sum(1 for key in s["arms"] if key.startswith("random"))


def render(results: dict, warm_start: dict | None = None) -> str:
    """RESULTS.md; `warm_start` (warm_start.json, a separate run) adds its section after the data sets."""
    settings = results["settings"]
    code = results.get("code", {})
    machine = results.get("machine", {})
    out = [
        "# Active learning benchmark: do the query strategies save labels over random sampling?",
        "",
        f"Pool-based simulation with an oracle on {len(results['summary'])} real data sets, "
        f"{settings['seeds']} seeds each; reproduce with `make bench-al` (README.md). Plots: `plots/<data set>.png`; "
        "every curve of every seed: `results.json`."
        + (" The meta warm start, a separate run, has its own section at the end." if warm_start else ""),
        "",
        "## Headline",
        "",
        *headline(results),
        "",
        "### By strategy",
        "",
        "ΔAULC vs random / labels-to-target ratio per data set; **bold** where the arm does not beat random.",
        "",
        *by_strategy(results),
        "",
        "## Run",
        "",
        "| | |",
        "|---|---|",
        f"| date | {results['date']} |",
        f"| command | `{results['command']}` |",
        f"| commit | `{code.get('commit', '?')}` {code.get('subject', '')} |",
    ]
    if code.get("uncommitted"):
        out.append(f"| uncommitted changes measured | {', '.join(f'`{p}`' for p in code['uncommitted'])} |")
    end = results.get("code_at_end", {})
    if end.get("fingerprint") and end["fingerprint"] != code.get("fingerprint"):
        out.append("| **warning** | `learners/ml` or this benchmark changed during the run: rerun on a quiet checkout |")
    elif end.get("commit") and end["commit"] != code.get("commit"):
        out.append(f"| note | HEAD moved to `{end['commit']}` during the run (other work); `learners/ml` and this "
                   "benchmark were unchanged (same content fingerprint), so every job measured the same code |")
    out += [
        f"| run time | {results.get('run_seconds', 0) / 60:.1f} min (featurising {results.get('featurise_seconds', 0):.0f} s"
        f" of it; {settings['jobs']} worker processes over (data set, seed); the jobs used "
        f"{sum(j.get('cpu_seconds', 0) for j in results['jobs']) / 60:.0f} CPU-minutes) |",
        f"| machine | {machine.get('cpu', '?')}, {machine.get('nproc_available', '?')} cores available, "
        f"{machine.get('memory_gib', '?')} GiB, load average at start {' '.join(machine.get('loadavg_at_start', []))} |",
        f"| software | Python {machine.get('python', '?')}, " + ", ".join(
            f"{k} {v}" for k, v in machine.get("packages", {}).items()) + " |",
        f"| seeds | {', '.join(str(s) for s in settings['seed_values'])} |",
        f"| arms | {', '.join(f'`{a}`' for a in settings['arms'])} |",
        "",
        "## Set-up",
        "",
        f"- **Split.** Per data set and seed: a stratified test split of {settings['test_fraction']:.0%} (seeded); "
        "the rest is the pool, whose labels the oracle reveals when asked.",
        "- **Seed set.** One pool item per class, drawn at random (seeded), the same for every arm of a seed "
        "(random, not the `kmeans_pp` cold start, so that every estimator and committee member sees every class "
        "from the first round; `kmeans_pp` runs as an arm of its own, pure diversity sampling all the way).",
        "- **Rounds.** Fit the arm's estimator on the labelled items, measure test accuracy, ask the strategy for "
        "the next batch from the unlabelled pool, reveal those labels; until the budget. Batch and budget per data "
        "set below; every arm of a seed is measured at the same label counts.",
        f"- **Estimators.** `logistic_regression` for every strategy; `bald` needs MC dropout, so it runs with "
        f"`mlp` and is compared with `random/mlp` (random sampling with the same MLP), never with the logistic "
        f"regression's random. Query-by-committee strategies query a `BaggedCommittee` of "
        f"{settings['committee_members']} bootstrap members of the estimator, but the accuracy is always that of "
        "the single estimator, so every arm of an estimator is scored on the same model.",
        "- **Features.** The workbench's featurisers (`learners.ml.featurisers`), fitted on all items of the data "
        "set without labels.",
        "",
        "### Metrics",
        "",
        "- **AULC**: normalised area under the learning curve = trapezoid area under test accuracy vs number of "
        "labels, from the seed set to the budget, divided by that label range; i.e. the mean accuracy over the "
        "label range. Reported as mean ± std over seeds.",
        "- **ΔAULC**: the arm's AULC minus random's (same estimator), paired by seed: mean ± std, and in brackets "
        "the seeds where the arm was higher.",
        f"- **Labels to {TARGET_FRACTION:.0%}**: the first measured label count (seed set included) at which test "
        f"accuracy is ≥ {TARGET_FRACTION:.0%} of the full-data accuracy of the same seed (the same estimator "
        "trained on the whole pool). Mean ± std over seeds when every seed got there; otherwise `> budget` with the "
        "number of seeds that did, and it counts as not reached.",
        "- **Ratio**: the arm's mean labels to target ÷ random's (same estimator). `≤ x%` where random did not "
        "reach the target in every seed: the ratio to the budget, an upper bound.",
        "- **Final**: test accuracy at the budget.",
        "- On the two-class data sets (`breast_cancer`, `food_reviews`) `least_confident`, `margin` and `entropy` "
        "rank items identically (each is a monotone function of the top probability), so their rows coincide.",
        "",
        "## Data sets",
        "",
        "| data set | source | featuriser | items | classes | features | pool / test | seed set | batch | budget "
        "| full-data accuracy (LR) | full-data accuracy (MLP) |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, d in results["datasets"].items():
        s = results["summary"].get(name)
        if s is None:
            continue
        full = s["full_accuracy"]
        lr, mlp = full.get("logistic_regression", {}), full.get("mlp", {})
        out.append(f"| {name} | {d['source']} | `{d['featuriser']}` | {d['n']:,} | {d['n_classes']} | "
                   f"{d['n_features']} | {d['pool']:,} / {d['test']:,} | {d['seed_set']} | {d['batch']} | "
                   f"{s['budget']} | {_pm(lr.get('mean'), lr.get('std'))} | {_pm(mlp.get('mean'), mlp.get('std'))} |")
    out += ["", "## Results per data set", ""]
    for name, s in results["summary"].items():
        d = results["datasets"][name]
        out += [f"### {name}: {d['title']}", "", f"![{name}](plots/{name}.png)", "",
                f"| arm | AULC | ΔAULC vs random (seeds won) | final accuracy | labels to {TARGET_FRACTION:.0%} "
                "| ratio to random | beats random | s per curve (query) |",
                "|---|--:|--:|--:|--:|--:|:-:|--:|"]
        for key, arm in s["arms"].items():
            seconds = "-" if arm["seconds_mean"] is None else \
                f"{arm['seconds_mean']:.1f} ({arm['query_seconds_mean']:.1f})"
            out.append(f"| `{key}` | {_pm(arm['aulc_mean'], arm['aulc_std'])} | {_delta(key, arm)} | "
                       f"{_pm(arm['final_mean'], arm['final_std'])} | {_labels(arm, s['budget'])} | {_ratio(arm)} | "
                       f"{_verdict(key, arm)} | {seconds} |")
        out.append("")
    if warm_start is not None:
        out += warm_start_report.section(warm_start)
    errors = [(name, key, seed, message) for name, s in results["summary"].items()
              for key, arm in s["arms"].items() for seed, message in arm["errors"].items()]
    errors += [(job["dataset"], what, job["seed"], text.strip().splitlines()[-1])
               for job in results["jobs"] for what, text in job.get("errors", {}).items()]
    if errors:
        out += ["## Failures", "", "Full tracebacks are in `results.json` (`jobs[].arms[].error`).", "",
                "| data set | arm | seed | error |", "|---|---|--:|---|"]
        out += [f"| {n} | `{k}` | {seed} | {m.replace('|', '/')} |" for n, k, seed, m in errors]
        out.append("")
    return "\n".join(out)
