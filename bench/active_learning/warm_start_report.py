"""The warm-start section: its summary over seeds, its part of RESULTS.md and plots/warm_start.png.

The curve metric is `metrics.aulc` over the first labels (seed set to the
budget, one label per round): the mean test accuracy over those label counts.
A warm-start arm is compared with the same strategy without it, paired by seed.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from bench.active_learning.metrics import aulc

IMPROVES_SHARE = 0.8  # "yes" needs a higher area in at least this share of the seeds, besides a higher mean
CHECKPOINTS = (20, 30, 50)  # label counts shown in the table besides the seed set
BEHIND = 0.01  # the headline says so when a warm-start arm ends more than this below the plain arm


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    return (float(np.mean(values)), float(np.std(values))) if values else (None, None)


def _pm(mean: float | None, std: float | None, digits: int = 3) -> str:
    return "-" if mean is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def base_key(key: str) -> str | None:
    """The plain arm a warm-start arm is compared with ("margin" for "margin+meta"); None for plain arms."""
    strategy, plus, _ = key.partition("+")
    return strategy if plus else None


def summarise(jobs: list[dict]) -> dict:
    """Per task: full-data accuracy, meta-training, and per arm the mean curve, its area and the handover."""
    by_task: dict[str, list[dict]] = {}
    for job in jobs:
        by_task.setdefault(job["task"], []).append(job)
    summary: dict = {}
    for task, task_jobs in by_task.items():
        task_jobs.sort(key=lambda j: j["seed"])
        labels = task_jobs[0]["labels"]
        arms = {key: _summarise_arm(key, task_jobs, labels) for key in dict.fromkeys(
            k for j in task_jobs for k in j["arms"])}
        for key, arm in arms.items():
            _compare(arm, arms.get(base_key(key) or ""))
        validated = [j["meta_training"] for j in task_jobs if j["meta_training"].get("validation_kept") is not None]
        summary[task] = {
            "labels": labels, "seeds": [j["seed"] for j in task_jobs],
            "full_accuracy": _mean_std([j["full_accuracy"] for j in task_jobs]),
            "validation_untrained": _mean_std([m["validation_untrained"] for m in validated]),
            "validation_kept": _mean_std([m["validation_kept"] for m in validated]),
            "validation_classes": task_jobs[0]["meta_training"]["validation_classes"],
            "meta_seconds": float(np.mean([j["meta_training"]["seconds"] for j in task_jobs])),
            "best_steps": ", ".join(str(j["meta_training"].get("best_step", "-")) for j in task_jobs),
            "source_classes": task_jobs[0]["source_classes"], "pool": task_jobs[0]["pool"],
            "test": task_jobs[0]["test"], "arms": arms,
        }
    return summary


def _summarise_arm(key: str, jobs: list[dict], labels: list[int]) -> dict:
    curves = {j["seed"]: j["arms"][key] for j in jobs if key in j["arms"]}
    accuracy = np.array([c["accuracy"] for c in curves.values()])
    areas = {seed: aulc(labels, c["accuracy"]) for seed, c in curves.items()}
    arm = {"seeds": len(curves), "curve_mean": accuracy.mean(axis=0).tolist(),
           "curve_std": accuracy.std(axis=0).tolist(), "aulc": areas,
           "aulc_mean": _mean_std(list(areas.values()))[0], "aulc_std": _mean_std(list(areas.values()))[1],
           "at": {str(count): _mean_std(accuracy[:, labels.index(count)].tolist())
                  for count in (labels[0], *CHECKPOINTS) if count in labels},
           "seconds_mean": float(np.mean([c["seconds"] for c in curves.values()]))}
    if base_key(key):
        handovers = [c["handed_over_at"] for c in curves.values()]
        arm["handed_over_at"] = handovers
        arm["meta_rounds_mean"] = float(np.mean([c["used"].count("meta") for c in curves.values()]))
        arm["own_final"] = _mean_std([c["own_accuracy"][-1] for c in curves.values()])
    return arm


def _compare(arm: dict, base: dict | None) -> None:
    """The paired area difference to the plain arm and the verdict."""
    arm.update({"delta_mean": None, "delta_std": None, "seeds_higher": None, "improves": None})
    if base is None:
        return
    shared = sorted(set(arm["aulc"]) & set(base["aulc"]))
    deltas = [arm["aulc"][s] - base["aulc"][s] for s in shared]
    if not deltas:
        return
    arm["delta_mean"], arm["delta_std"] = _mean_std(deltas)
    arm["seeds_higher"], arm["seeds_compared"] = sum(d > 0 for d in deltas), len(deltas)
    if arm["delta_mean"] <= 0:
        arm["improves"] = "no"
    else:
        arm["improves"] = "yes" if arm["seeds_higher"] >= IMPROVES_SHARE * len(deltas) else "mixed"


def _handover(arm: dict, budget: int) -> str:
    if "handed_over_at" not in arm:
        return "-"
    at = [h for h in arm["handed_over_at"] if h is not None]
    text = f"{len(at)}/{len(arm['handed_over_at'])} seeds"
    if at:
        text += f", at {np.mean(at):.0f} labels (range {min(at)}-{max(at)})"
    return text + f"; meta-model scored in {arm['meta_rounds_mean']:.0f} rounds"


def _behind_at_end(s: dict, key: str) -> str:
    """A clause when the warm-start arm ends the label range clearly below the plain arm."""
    last = str(s["labels"][-1])
    arm, base = s["arms"][key], s["arms"][base_key(key) or ""]
    if arm["at"][last][0] >= base["at"][last][0] - BEHIND:
        return ""
    took_over = sum(h is not None for h in arm["handed_over_at"])
    return (f"; but at {last} labels it is behind, {arm['at'][last][0]:.3f} vs {base['at'][last][0]:.3f}, the own "
            f"model having taken over in {took_over} of {len(arm['handed_over_at'])} seeds")


def headline(warm: dict) -> list[str]:
    """Per task: does the margin warm start raise the first labels' area over plain margin?"""
    lines = []
    for task, s in warm["summary"].items():
        for key in ("margin+meta", "random+meta", "margin+ncm"):
            arm, base = s["arms"].get(key), s["arms"].get(base_key(key) or "")
            if arm is None or base is None or arm["delta_mean"] is None:
                continue
            verdict = {"yes": "improves it", "mixed": "raises the mean, though not consistently",
                       "no": "does not improve it"}[arm["improves"]]
            lines.append(f"- **{task}**: `{key}` {verdict}: area over labels {s['labels'][0]}-{s['labels'][-1]} "
                         f"{_pm(arm['aulc_mean'], arm['aulc_std'])} vs `{base_key(key)}` "
                         f"{_pm(base['aulc_mean'], base['aulc_std'])} (Δ {arm['delta_mean']:+.3f} ± "
                         f"{arm['delta_std']:.3f}, higher in {arm['seeds_higher']} of {arm['seeds_compared']} seeds)"
                         + _behind_at_end(s, key) + ".")
    return lines


def section(warm: dict) -> list[str]:
    """The '## Meta warm start' section of RESULTS.md."""
    settings, code, machine = warm["settings"], warm.get("code", {}), warm.get("machine", {})
    budget = settings["budget"]
    out = [
        "## Meta warm start: does it improve the first 50 labels?",
        "",
        f"A separate run: `{warm['command']}` on {warm['date']}, commit `{code.get('commit', '?')}`"
        + (f" + uncommitted {', '.join(f'`{p}`' for p in code['uncommitted'])}" if code.get("uncommitted") else "")
        + f"; {warm.get('run_seconds', 0) / 60:.1f} min with {settings['jobs']} worker processes on "
        f"{machine.get('nproc_available', '?')} cores (load average at start "
        f"{' '.join(machine.get('loadavg_at_start', []))}); {len(settings['seed_values'])} seeds. Every curve: "
        "`warm_start.json`; plot: `plots/warm_start.png`.",
        "",
        *headline(warm),
        "",
        "**Set-up.** A meta-model must never have seen the project's classes, so each task holds classes out: per "
        "seed, `class_split` draws the project's classes; the product's recipe "
        "(`learners.meta.recipes.meta_train_default`: ProtoNet over a residual MLP on standardised inputs, the "
        "best meta-parameters on validation classes kept, the untrained start included) meta-trains on the data "
        "set's other classes (and, for `bbc_news`, on `food_reviews`' two classes too: an earlier project in the "
        "same MiniLM space), and active learning runs on the held-out classes only "
        f"(stratified {settings['test_fraction']:.0%} test split, seed set of one pool item per class, one label "
        f"per round up to {budget} labels, `{settings['estimator']}` as every arm's own model). All arms of a "
        "seed share the split, the seed set and the label counts.",
        "",
        f"**The warm start** is the product's rule (`learners.meta.warm_start`): once every label has "
        f"{settings['min_per_label']} example (the seed set), the meta-model adapted to the labelled items "
        "orders the queue (the arm's strategy on its probabilities) and is the model scored, since it is the one "
        "the project would use; after each retrain `compare_on_folds` measures the own model against it on the "
        "labelled items, and the first time `own_model_wins` the own model takes over for good. Until each label "
        "has 2 examples no fold can hold one out, so the adapted model keeps the queue. `random+meta` draws the "
        "same items as `random` and differs only in the model scored; `margin+ncm` is the same rule with the "
        "recipe's untrained start (0 steps: nearest class mean on the standardised features): what the warm start "
        "gives without any meta-training.",
        "",
        f"**Metric.** Area = `metrics.aulc` over labels seed set to {budget}: the mean test accuracy over those "
        "label counts; mean ± std over seeds. Δ is paired by seed against the same strategy without warm start; "
        f"*improves* is `yes` when Δ's mean is positive and the area is higher in at least {IMPROVES_SHARE:.0%} of "
        "the seeds, `mixed` when only the mean is higher. *Own model's accuracy* is the arm's own estimator trained on "
        "the same labels, scored even while the adapted model is the one in use: the gap to the arm's own "
        "accuracy column is what a late handover costs.",
        "",
    ]
    for task, s in warm["summary"].items():
        spec = settings["tasks"][task]
        counts = [c for c in (s["labels"][0], *CHECKPOINTS) if str(c) in next(iter(s["arms"].values()))["at"]]
        out += [f"### {task}: {spec['title']}", "",
                f"{spec['n_target_classes']} project classes, pool {s['pool']} / test {s['test']}; meta-trained on "
                f"{s['source_classes']} source classes, {spec['n_way']}-way {spec['k_shot']}-shot episodes, "
                f"at most {spec['steps']} steps ({s['meta_seconds']:.0f} s; parameters kept from step "
                f"{s['best_steps']}, per seed, where 0 is the untrained start"
                + (f"; {s['validation_classes']}-class validation episodes, accuracy untrained "
                   f"{_pm(*s['validation_untrained'])}, kept {_pm(*s['validation_kept'])}"
                   if s["validation_kept"][0] is not None else "; too few source classes to validate")
                + f"). `{settings['estimator']}` on the whole pool: "
                f"{_pm(*s['full_accuracy'])}.", "",
                "| arm | area, labels " + f"{s['labels'][0]}-{s['labels'][-1]}" + " | Δ vs without warm start "
                "(seeds higher) | improves | " + " | ".join(f"accuracy at {c}" for c in counts)
                + f" | own model's accuracy at {s['labels'][-1]} | own model took over |",
                "|---|--:|--:|:-:|" + "--:|" * (len(counts) + 1) + "---|"]
        for key, arm in s["arms"].items():
            delta = "-" if arm["delta_mean"] is None else (
                f"{arm['delta_mean']:+.3f} ± {arm['delta_std']:.3f} ({arm['seeds_higher']}/{arm['seeds_compared']})")
            out.append(f"| `{key}` | {_pm(arm['aulc_mean'], arm['aulc_std'])} | {delta} | {arm['improves'] or '-'} | "
                       + " | ".join(_pm(*arm["at"][str(c)]) for c in counts)
                       + f" | {_pm(*arm['own_final']) if 'own_final' in arm else '-'} | {_handover(arm, budget)} |")
        out.append("")
    return out


def plot(path: Path, warm: dict) -> None:
    """One panel per task: mean curve ± std per arm; plain dashed, warm start solid, the control dotted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.active_learning.plots import COLOURS

    summary = warm["summary"]
    fig, axes = plt.subplots(1, len(summary), figsize=(6.2 * len(summary), 4.6), squeeze=False)
    for ax, (task, s) in zip(axes[0], summary.items()):
        labels = np.array(s["labels"])
        for key, arm in s["arms"].items():
            strategy, plus, variant = key.partition("+")
            style = {"": "--", "meta": "-", "ncm": ":"}.get(variant, "-.")
            mean, std = np.array(arm["curve_mean"]), np.array(arm["curve_std"])
            colour = COLOURS.get(strategy, "darkgoldenrod")
            ax.plot(labels, mean, linestyle=style, color=colour, linewidth=1.6,
                    label=f"{key} (area {arm['aulc_mean']:.3f})")
            if variant != "ncm":
                ax.fill_between(labels, mean - std, mean + std, color=colour, alpha=0.08, linewidth=0)
        ax.set_title(textwrap.fill(f"{task}: {warm['settings']['tasks'][task]['title']}", 60), fontsize=9)
        ax.set_xlabel("labels (seed set + queried)")
        ax.set_ylabel("test accuracy")
        ax.set_xlim(labels[0], labels[-1])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc="lower right")
    fig.suptitle(f"Meta warm start, first {warm['settings']['budget']} labels: mean ± std over "
                 f"{len(warm['settings']['seed_values'])} seeds", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
