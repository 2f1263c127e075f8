"""RESULTS.md from results.json: the targets first, then one table (or two) per section."""
from __future__ import annotations

from typing import Any

TITLES = {"fedavg": "1. FedAvg and server optimisers against centralised training",
          "async": "2. Synchronous rounds against FedBuff, with stragglers",
          "hierarchy": "3. Regions and int8: what reaches the coordinator",
          "secagg": "4. Secure aggregation: bytes per client",
          "robust": "5. 20% malicious sites",
          "privacy": "6. Differential privacy: accuracy against epsilon",
          "scale": "7. Clients per round: time and memory"}
SCALE_BOUND = 4.0  # "bounded": 100x the clients may raise the rounds' RSS growth at most this many times


def _pm(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    if stat.get("n", 1) > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def _yes(flag: bool | None) -> str:
    return "–" if flag is None else ("**yes**" if flag else "**no**")


def _kib(value: float) -> str:
    return f"{value / 1024:,.1f} KiB"


def _rounds(values: list) -> str:
    return ", ".join("–" if v is None else str(v) for v in values)


def _scale_ratio(rows: list[dict], audit: str) -> float | None:
    first, last = rows[0].get(audit), rows[-1].get(audit)
    if not first or not last:
        return None
    return last["rss_increase_kib"] / max(first["rss_increase_kib"], 1024)


def targets(results: dict) -> list[list[str]]:
    """[section, target, result, met] for the summary table."""
    s = results["sections"]
    rows = []
    if "fedavg" in s:
        parts, met = [], True
        for kind, model in s["fedavg"]["models"].items():
            fedavg = model["strategies"]["fedavg"]
            parts.append(f"{kind}: rounds {_rounds(fedavg['rounds_to_target'])} (target {model['target_accuracy']:.3f})")
            met = met and fedavg["target_met"]
        rows.append(["fedavg", f"FedAvg reaches {s['fedavg']['settings']['target_fraction']:.0%} of centralised "
                     f"accuracy within {s['fedavg']['settings']['rounds']} rounds", "; ".join(parts), _yes(met)])
    if "async" in s:
        a = s["async"]
        speed = a["speedup"]["sync"]
        rows.append(["async", f"FedBuff ≥ {a['settings']['speedup_target']:g}x faster than sync to accuracy "
                     f"{a['target_accuracy']:.3f} (simulated time)",
                     f"{_pm(speed, 1)}x (min {speed['min']:.1f}x); vs sync with a deadline "
                     f"{_pm(a['speedup']['sync_deadline'], 1)}x" if speed.get("min") else "target not reached",
                     _yes(a["target_met"])])
    if "hierarchy" in s:
        h = s["hierarchy"]
        best = max(h["configs"].items(), key=lambda item: item[1]["reduction_vs_flat"])
        rows.append(["hierarchy", f"≥ {h['settings']['reduction_target']:.0%} less coordinator ingress than flat; "
                     f"accuracy within {h['settings']['accuracy_tolerance'] * 100:.0f} point",
                     f"{best[0]}: {best[1]['reduction_vs_flat']:.1%} less, accuracy "
                     f"{best[1]['accuracy_change_vs_flat'] * 100:+.1f} points",
                     _yes(h["target_met"]["reduction"] and h["target_met"]["accuracy"])])
    if "secagg" in s:
        sa = s["secagg"]
        held = [r for r in sa["rows"] if r["meets_target"]]
        rows.append(["secagg", f"≤ {sa['settings']['overhead_target']:g}x the plain update's bytes per client",
                     f"holds in {len(held)} of {len(sa['rows'])} settings (see the table: large vectors, few clients)",
                     "partly" if held and len(held) < len(sa["rows"]) else _yes(bool(held))])
    if "robust" in s:
        parts = []
        for name, setup in s["robust"]["setups"].items():
            rules = setup["rules"]
            best = max(rules, key=lambda r: min(rules[r]["sign_flip"]["mean"], rules[r]["gaussian"]["mean"]))
            parts.append(f"{name}: fedavg {rules['fedavg']['sign_flip']['mean']:.2f} / "
                         f"{rules['fedavg']['gaussian']['mean']:.2f}, best {best} "
                         f"{rules[best]['sign_flip']['mean']:.2f} / {rules[best]['gaussian']['mean']:.2f}")
        rows.append(["robust", "report (no fixed target): accuracy under sign-flip / Gaussian attack",
                     "; ".join(parts), "–"])
    if "privacy" in s:
        p = s["privacy"]
        parts = [f"σ {r['sigma']:g}: ε {r['epsilon']:.1f}, {r['accuracy']['mean']:.3f}"
                 for r in p["rows"].values() if r["sigma"] is not None]
        rows.append(["privacy", "report (no fixed target): accuracy at ε (δ = 1e-5)",
                     f"no DP {p['rows']['no DP']['accuracy']['mean']:.3f}; " + "; ".join(parts), "–"])
    if "scale" in s:
        sc = s["scale"]["rows"]
        counting, default = _scale_ratio(sc, "counting"), _scale_ratio(sc, "default")
        last = sc[-1]
        rows.append(["scale", f"memory bounded: {sc[-1]['clients'] // sc[0]['clients']}x the clients raise the "
                     f"rounds' RSS growth less than {SCALE_BOUND:g}x",
                     f"{last['clients']:,} clients: {_median(last['counting']['round_seconds']):.1f} s per round; "
                     f"RSS growth +{last['counting']['rss_increase_kib'] / 1024:.1f} MiB with a counting audit, "
                     f"+{last['default']['rss_increase_kib'] / 1024:.1f} MiB with PayloadAudit",
                     f"{_yes(counting is not None and counting < SCALE_BOUND)} (runtime); "
                     f"{_yes(default is not None and default < SCALE_BOUND)} (with PayloadAudit)"])
    return rows


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def headline(results: dict) -> list[str]:
    return [f"{section}: {result} (target met: {met})" for section, _, result, met in targets(results)]


def _fedavg(sec: dict) -> list[str]:
    st = sec["settings"]
    out = [f"{st['sites']} sites (Dirichlet α = {st['alpha']}: {sec['split']['rows_min']}–{sec['split']['rows_max']} "
           f"rows, {sec['split']['classes_per_site_mean']:.1f} classes per site on average), all in every round, "
           f"{st['rounds']} rounds. Centralised references: the same local recipe on all training rows pooled "
           f"({st['rounds']} rounds, per seed), and scikit-learn LogisticRegression (C = 1, pooled rows): "
           f"**{sec['logistic_regression_accuracy']:.3f}**. Target: {st['target_fraction']:.0%} of the better of the "
           f"two; also shown: rounds to {st['also_fraction']:.0%}.", ""]
    for kind, model in sec["models"].items():
        out += [f"**{kind}** — same recipe centralised: {_pm(model['centralised_accuracy'])}; target accuracy "
                f"{model['target_accuracy']:.3f}, {st['also_fraction']:.0%}: {model['also_accuracy']:.3f}", "",
                f"| strategy | server parameters | accuracy after {st['rounds']} rounds | rounds to "
                f"{st['target_fraction']:.0%} (per seed) | rounds to {st['also_fraction']:.0%} (per seed) | target met |",
                "|---|---|---|---|---|---|"]
        for name, r in model["strategies"].items():
            params = ", ".join(f"{k} {v:g}" for k, v in r["params"].items()) or "–"
            out.append(f"| {name} | {params} | {_pm(r['final_accuracy'])} | {_rounds(r['rounds_to_target'])} | "
                       f"{_rounds(r['rounds_to_also'])} | {_yes(r['target_met'])} |")
        out.append("")
    return out


def _async(sec: dict) -> list[str]:
    st = sec["settings"]
    out = [f"{st['sites']} sites, all training concurrently; {st['straggler_fraction']:.0%} stragglers "
           f"{st['straggler_factor']:g}x slower; latency base x LogNormal(0, {st['latency_sigma']}). Each run does "
           f"{st['sync_rounds'] * st['sites']:,} local trainings at most (sync: {st['sync_rounds']} rounds; FedBuff: "
           f"K = {st['buffer_size']}). Target accuracy {sec['target_accuracy']:.3f} "
           f"(section 1's target for the linear model). Times in simulated seconds.", "",
           "| run | time to target (s) | reached (seeds) | final accuracy | run length (s) | speed-up of FedBuff |",
           "|---|---|---|---|---|---|"]
    labels = {"sync": "sync, waits for all", "sync_deadline": f"sync, {st['deadline_seconds']:g} s deadline",
              "fedbuff": f"FedBuff (K = {st['buffer_size']})"}
    for kind, run in sec["runs"].items():
        speed = sec["speedup"].get(kind)
        out.append(f"| {labels[kind]} | {_pm(run['time_to_target'], 1)} | {run['reached']} of "
                   f"{len(run['per_seed'])} | {_pm(run['final_accuracy'])} | {_pm(run['final_time'], 0)} | "
                   f"{_pm(speed, 1) + 'x' if speed and speed.get('mean') else '–'} |")
    share = [r["straggler_share_of_updates"] for r in sec["runs"]["fedbuff"]["per_seed"]]
    dropped = [r["dropped_updates"] for r in sec["runs"]["sync_deadline"]["per_seed"]]
    out += ["", f"Stragglers' share of the updates FedBuff aggregated: {', '.join(f'{x:.1%}' for x in share)} "
            f"(they are {st['straggler_fraction']:.0%} of the sites); the deadline run dropped "
            f"{', '.join(str(x) for x in dropped)} updates.", ""]
    return out


def _hierarchy(sec: dict) -> list[str]:
    st = sec["settings"]
    out = [f"{st['sites']} sites, every site in every round, {st['rounds']} rounds of FedAvg on the linear model "
           f"({st['parameters']} parameters). Ingress = `RoundResult.bytes_in` per aggregation, mean over rounds "
           "and seeds.", "",
           "| layout | into the coordinator | less than flat | out of the sites | accuracy | vs flat (points) |",
           "|---|---|---|---|---|---|"]
    for name, c in sec["configs"].items():
        out.append(f"| {name} | {_kib(c['bytes_in_per_aggregation'])} | {c['reduction_vs_flat']:.1%} | "
                   f"{_kib(c['site_bytes_in_per_aggregation'])} | {_pm(c['final_accuracy'])} | "
                   f"{c['accuracy_change_vs_flat'] * 100:+.1f} |")
    out += ["", "int8 error on real site updates (`compression_error`, one update per site, 100 sites):", "",
            "| updates made from | relative L2 (mean / max) | max abs error | stochastic: relative L2 (mean) | "
            "largest |value| | bytes float32 / int8 |", "|---|---|---|---|---|---|"]
    for name, e in sec["compression_error"].items():
        out.append(f"| {name.replace('_', ' ')} | {e['relative_l2_mean']:.4f} / {e['relative_l2_max']:.4f} | "
                   f"{e['max_abs_max']:.2e} | {e['relative_l2_stochastic_mean']:.4f} | {e['max_abs_value_max']:.3f} | "
                   f"{e['byte_ratio_mean']:.2f} |")
    return out + [""]


def _secagg(sec: dict) -> list[str]:
    out = ["Bytes per client are the mean over the clients that finished the round; \"round s\" is the whole "
           "round (every client and the server) in one process on one core.", "",
           "| vector | clients | dropped | plain bytes | bytes per client | overhead | upload only | round s | ≤ 2x |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in sec["rows"]:
        out.append(f"| {r['vector']} | {r['clients']} | {r['dropped']} | {r['plain_bytes']:,} | "
                   f"{r['bytes_per_client']:,.0f} | {r['overhead']:.2f}x | {r['upload_overhead']:.2f}x | "
                   f"{r['seconds']:.2f} | {_yes(r['meets_target'])} |")
    phases = sec["rows"][-2]["bytes_by_phase"]
    out += ["", f"Per client, the protocol adds about **{sec['bytes_per_peer']:.0f} bytes per other client** to the "
            f"masked vector itself (4 bytes per value); e.g. with {sec['rows'][-2]['clients']} clients: "
            + ", ".join(f"{k} {v:,.0f} B" for k, v in phases.items())
            + f". So the overhead is about 1 + {sec['bytes_per_peer']:.0f} n / (4 L) for n clients and L values: it "
            f"stays under 2x only while L > about {sec['break_even_length_per_client']:.0f} n. A survivor's bytes do "
            "not depend on dropouts (it reveals one share per peer either way); dropouts cost the server "
            "computation (rebuilding their keys and masks), not the clients bytes.", "",
            "FedAvg through `secure_fedavg_change` against plain FedAvg on the same real updates (10 sites):", "",
            "| model | case | survivors | max abs difference | largest |change| |", "|---|---|---|---|---|"]
    for kind, cases in sec["fedavg_equality"].items():
        for case, e in cases.items():
            out.append(f"| {kind} | {case} | {e['survivors']} | {e['max_abs_diff']:.1e} | {e['max_abs_change']:.3f} |")
    return out + [""]


def _robust(sec: dict) -> list[str]:
    st = sec["settings"]
    out = [f"Final test accuracy after {st['rounds']} rounds (linear model). Attacks: sign-flip x{-st['sign_flip_scale']:g} "
           f"of the honest change, or N(0, {st['gaussian_std']:g}) per coordinate.", ""]
    for name, setup in sec["setups"].items():
        out += [f"**{name} sites malicious** (median honest update norm {setup['honest_update_norm_median']:.2f}; "
                f"Gaussian attack norm ≈ {setup['gaussian_attack_norm']:.1f})", "",
                "| rule | no attack | sign-flip | Gaussian |", "|---|---|---|---|"]
        for rule, row in setup["rules"].items():
            out.append(f"| {rule} | {_pm(row['none'])} | {_pm(row['sign_flip'])} | {_pm(row['gaussian'])} |")
        out.append("")
    return out


def _privacy(sec: dict) -> list[str]:
    st = sec["settings"]
    q = sec["update_norm_quartiles"]
    out = [f"{st['sites']} sites, {st['sites_per_round']} sampled per round (q = {st['sample_rate']:g}), "
           f"{st['rounds']} rounds, DP mode \"{st['mode']}\", clip norm C = {sec['clip_norm']:.3f} (median no-DP "
           f"update norm; quartiles {q[0]:.3f}, {q[2]:.3f}). ε at δ = {st['delta']:g} after the last round.", "",
           "| noise σ | ε | accuracy |", "|---|---|---|"]
    for name, r in sec["rows"].items():
        eps = "∞ (no DP)" if r["epsilon"] is None else f"{r['epsilon']:.2f}" + (" ¹" if r.get("epsilon_bound_loose")
                                                                                  else "")
        label = name if r["sigma"] is None else f"{r['sigma']:g}"
        out.append(f"| {label} | {eps} | {_pm(r['accuracy'])} |")
    if any(r.get("epsilon_bound_loose") for r in sec["rows"].values()):
        out += ["", "¹ opacus warned that the best Rényi order was the smallest it tries: this ε is an upper bound "
                "that more orders could tighten."]
    return out + [""]


def _scale(sec: dict) -> list[str]:
    st = sec["settings"]
    out = [f"FedAvg, linear model, every client in every round, {st['rounds']} rounds per child, "
           f"{st.get('epochs', 1)} local epoch(s); clients hold {st['rows_per_client'][0]}–{st['rows_per_client'][1]} "
           "rows each. Each row: fresh child processes. Time per round is the median wall time of the rounds (one "
           "torch thread); RSS growth is the peak RSS during the rounds (VmHWM, reset before the first) minus the RSS "
           "before them (after imports, data and the coordinator); Python peak is tracemalloc's during one round "
           "(counting audit).", "",
           "| clients per round | s per round | peak RSS, PayloadAudit | RSS growth, PayloadAudit | audit records | "
           "RSS growth, counting audit | Python peak (one round) | accuracy after the rounds |",
           "|---|---|---|---|---|---|---|---|"]
    for row in sec["rows"]:
        d, c, t = row.get("default"), row.get("counting"), row.get("tracemalloc")
        traced = f"{t['tracemalloc_peak_bytes'] / 2**20:.1f} MiB" if t else "–"
        out.append(f"| {row['clients']:,} | {_median(c['round_seconds']):.2f} | {d['rss_peak_kib'] / 1024:.0f} MiB | "
                   f"+{d['rss_increase_kib'] / 1024:.1f} MiB | {d['audit_records']:,} | "
                   f"+{c['rss_increase_kib'] / 1024:.1f} MiB | {traced} | {c['accuracy_last_round']:.3f} |")
    return out + [""]


RENDER = {"fedavg": _fedavg, "async": _async, "hierarchy": _hierarchy, "secagg": _secagg, "robust": _robust,
          "privacy": _privacy, "scale": _scale}


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    out = ["# Federated-learning benchmark", "",
           "Generated by `bench/federated/run.py` from `results.json`; do not edit by hand. See README.md for the "
           "method.", "",
           f"- Command: `{results['command']}` ({results['date']}, {results['run_seconds'] / 60:.1f} min)",
           f"- Machine: {m['cpu']}, {m['nproc']} CPU cores, torch threads {m['torch_threads']}, load average at start "
           f"{' '.join(m['loadavg_at_start'])}, at end {' '.join(m.get('loadavg_at_end', ['?']))}",
           f"- Data: scikit-learn digits (1,797 × 64, /16), 360 stratified test rows evaluated centrally; sites split "
           f"the other 1,437 by Dirichlet α = 0.5. Seeds {results['settings']['seeds']} (mean ± sd over seeds).",
           "", "## Targets", "", "| section | target | result | met |", "|---|---|---|---|"]
    out += [f"| {' | '.join(row)} |" for row in targets(results)]
    recipes = results.get("recipes", {})
    if recipes:
        out += ["", "Recipes, chosen on validation rows (never the test rows; see README.md): " + "; ".join(
            f"{kind}: SGD lr {r['training']['lr']:g}, {r['training']['epochs']} local epoch(s), batch "
            f"{r['training']['batch_size']}; " + ", ".join(
                f"{name} {', '.join(f'{k} {v:g}' for k, v in params.items())}" for name, params in r["server"].items()
                if params) for kind, r in recipes.items()) + "."]
    for name, sec in results["sections"].items():
        out += ["", f"## {TITLES[name]}", "", f"_{sec['seconds']:.0f} s, {sec['date']}_", ""]
        out += RENDER[name](sec)
    return "\n".join(out).rstrip() + "\n"
