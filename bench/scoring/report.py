"""Turns results.json of the scoring benchmark into RESULTS.md (tables, the target with PASS/MISS)."""
from __future__ import annotations

TARGET = {
    "items": 1_000_000,
    "seconds": 60.0,
    "text": "1,000,000 items with 384-d features scored and the queue order swapped in under 60 s on 2 cores "
            "with logistic regression",
}
# The 1M run's peak RSS may be at most this multiple of the smallest run's: memory must not grow with the pool.
MEMORY_GROWTH_LIMIT = 1.5

PHASES = [
    ("fill_check", "featurise-fill check (`features_fill`, nothing missing)"),
    ("prepare", "feature space, training labels, labelled rows"),
    ("cross_validation", "cross-validation (5-fold, in `train_seconds`)"),
    ("fit", "final fit (the rest of `train_seconds`)"),
    ("count", "open-item count (in `score_seconds`)"),
    ("score_read", "scoring: read + decode feature rows (`features_iter_open`)"),
    ("score_model", "scoring: predict_proba + margin, concatenation"),
    ("stop_set", "stop-set predictions and agreement"),
    ("swap_txn", "swap: transaction body (`metrics.swap_seconds`)"),
    ("swap_commit", "swap: COMMIT and the rest until return"),
    ("other", "everything else in the call"),
]


def code_changes(before: dict, after: dict) -> list[str]:
    """Application files whose content differs between two code_version() snapshots."""
    trees_before, trees_after = before.get("trees", {}), after.get("trees", {})
    committed = [f"{path}/ (committed)" for path in sorted(set(trees_before) & set(trees_after))
                 if trees_before[path] != trees_after[path]]
    old, new = before.get("files", {}), after.get("files", {})
    return committed + sorted(name for name in set(old) | set(new) if old.get(name) != new.get(name))


def _mib(kib: float | None) -> str:
    return "–" if kib is None else f"{kib / 1024:,.0f}"


def _s(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def phase_split(train: dict) -> dict[str, float]:
    """Wall seconds of the call, split into the PHASES (they add up to the call's wall time)."""
    p = {name: phase["wall_s"] for name, phase in train["phases"].items()}
    summary = train["summary"]
    split = {
        "fill_check": p.get("fill_check", 0.0),
        "prepare": p.get("space", 0.0) + p.get("labels", 0.0) + p.get("load_labelled", 0.0),
        "cross_validation": p.get("cross_validation", 0.0),
        "fit": summary["train_seconds"] - p.get("cross_validation", 0.0),
        "count": summary["score_seconds"] - p.get("score_pool", 0.0),
        "score_read": p.get("score_read_rows", 0.0),
        "score_model": p.get("score_pool", 0.0) - p.get("score_read_rows", 0.0),
        "stop_set": p.get("stop_set", 0.0) + p.get("stop_agreement", 0.0),
        "swap_txn": train["swap_in_transaction_s"] or 0.0,
        "swap_commit": train["swap_wall_s"] - (train["swap_in_transaction_s"] or 0.0),
    }
    split["other"] = train["call_s"] - sum(split.values())
    return split


def target_verdict(leg: dict, train: dict) -> str:
    if leg["items"] != TARGET["items"]:
        return f"n/a ({train['call_s']:.0f} s; the target is at 1M)"
    return "**PASS**" if train["call_s"] <= TARGET["seconds"] else "**MISS**"


def render(results: dict) -> str:
    m = results["machine"]
    code = results["code"]
    lines = [
        "# Scoring benchmark: results",
        "",
        f"Target: **{TARGET['text']}**, on SQLite (the embedded default) and on PostgreSQL. Judged on the wall "
        "time of one `model_version_train(project_id=, request_id=)` call in a fresh process (the first retrain "
        "after setup), at 1,000,000 items.",
        "",
        f"- Date: {results['date']}; command: `{results['command']}`",
        f"- Machine: {m['nproc']} CPUs ({m['nproc_available']} available to the run), {m['cpu']}, "
        f"{m['memory_gib']} GiB RAM, Python {m['python']}, SQLite {m['sqlite']}"
        + (f", {m['postgres']}" if m.get("postgres") else "") + f"; load average at start {' '.join(m['loadavg_at_start'])}",
        f"- Code: {code['commit']} ({code['subject']})"
        + (f" + uncommitted changes to {len(code['uncommitted'])} files under annotate/, learners/, workbench/ "
           f"(fingerprint {code.get('uncommitted_sha1')})" if code["uncommitted"] else ""),
    ]
    snapshots = [(f"{leg['backend']} {leg['items']:,} started", leg["code"]) for leg in results["legs"]
                 if "code" in leg] + ([("the end", results["code_at_end"])] if results.get("code_at_end") else [])
    for when, snapshot in snapshots:
        changed = code_changes(code, snapshot)
        if changed:
            lines.append(f"- **Application code changed while the benchmark ran** (by the time {when}, other work "
                         f"had changed: {', '.join(f'`{c}`' for c in changed)}).")
            break
    for skipped in results.get("skipped", []):
        lines.append(f"- Skipped: {skipped}")
    lines += ["", "## Summary", "",
              "Seconds of wall time. *train* = cross-validation + fit (`train_seconds`), *score* = every open item's "
              "margin, chunk by chunk (`score_seconds`), *swap* = storing the version and rewriting every open "
              "item's priority, prediction and confidence in one transaction, including its COMMIT. *total* is the "
              "whole call (also the featurise-fill check and the stop set). Peak RSS is the training process's "
              "(getrusage), Django and the libraries included.", "",
              "| backend | items | setup | retrain | train | score | swap | total | peak RSS MiB | target |",
              "|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    misses = []
    for leg in results["legs"]:
        if "error" in leg:
            lines.append(f"| {leg['backend']} | {leg['items']:,} | failed: {leg['error'][:200]!r} |||||||||")
            continue
        for number, train in enumerate(leg["retrains"], start=1):
            s = train["summary"]
            verdict = target_verdict(leg, train) if number == 1 else "(steady state)"
            which = "first" if number == 1 else f"second (+{len(train['before']['labelled']['labelled'])} labels)"
            lines.append(
                f"| {leg['backend']} | {leg['items']:,} | {_s(leg['setup']['total_s'], 0) if number == 1 else ''} | "
                f"{which} | "
                f"{_s(s['train_seconds'])} | {_s(s['score_seconds'])} | {_s(train['swap_wall_s'])} | "
                f"**{_s(train['call_s'])}** | {_mib(train['peak_rss_kib'])} | {verdict} |"
            )
            if number == 1 and leg["items"] == TARGET["items"] and train["call_s"] > TARGET["seconds"]:
                split = phase_split(train)
                biggest = max(split, key=split.get)
                label = dict(PHASES)[biggest]
                misses.append(
                    f"- {leg['backend']} at {leg['items']:,}: {train['call_s']:.0f} s, "
                    f"{train['call_s'] / TARGET['seconds']:.1f}x the target. The largest part is {label}: "
                    f"{split[biggest]:.0f} s ({split[biggest] / train['call_s']:.0%})."
                )
    if misses:
        lines += ["", "Missed:", "", *misses]
    lines += _phase_tables(results) + _verification(results) + _memory(results) + _setup(results)
    lines += _profiles(results) + _probes(results) + _alternatives(results) + _load(results)
    return "\n".join(lines) + "\n"


def _phase_tables(results: dict) -> list[str]:
    legs = [leg for leg in results["legs"] if "retrains" in leg]
    if not legs:
        return []
    columns = [(leg, number, train) for leg in legs for number, train in enumerate(leg["retrains"], start=1)]
    lines = ["", "## Where the time goes", "",
             "Wall seconds per phase of the call (the phases add up to the total). Measured by wrapping the "
             "functions `model_version_train` calls, without changing them.", "",
             "| phase | " + " | ".join(f"{leg['backend']} {leg['items'] // 1000:,}k #{n}" for leg, n, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    splits = [phase_split(train) for _, _, train in columns]
    for key, label in PHASES:
        lines.append(f"| {label} | " + " | ".join(_s(split[key]) for split in splits) + " |")
    lines.append("| **total** | " + " | ".join(f"**{_s(t['call_s'])}**" for _, _, t in columns) + " |")
    lines.append("| of which `queue_reorder` | "
                 + " | ".join(_s(t["phases"]["queue_reorder"]["wall_s"]) for _, _, t in columns) + " |")
    lines.append("| CPU s of the training process (whole call) | "
                 + " | ".join(_s(t["phases"]["call"]["cpu_s"]) for _, _, t in columns) + " |")
    lines.append("| CPU s of its PostgreSQL backend (whole call) | "
                 + " | ".join(_s(t["phases"]["call"]["db_cpu_s"]) if t.get("database_pid") else "–"
                              for _, _, t in columns) + " |")
    lines.append("| … of which in `queue_reorder` | "
                 + " | ".join(_s(t["phases"]["queue_reorder"]["db_cpu_s"]) if t.get("database_pid") else "–"
                              for _, _, t in columns) + " |")
    lines.append("| process wall incl. Python/Django start-up | "
                 + " | ".join(_s(t["process_wall_s"]) for _, _, t in columns) + " |")
    return lines


def _verification(results: dict) -> list[str]:
    lines = ["", "## Checks", "",
             "After each retrain, in a separate process: every open item must carry `scored_by_version` of the new "
             "version, the stored priority must equal the margin recomputed from the stored model and the cached "
             "rows, and `queue_next_item` (an annotator with a membership, rolled back) must serve the "
             "highest-margin item.", "",
             "| backend | items | version | open items | not scored by it | max priority error | wrong predicted "
             "labels | served item | highest-margin item | OK | first next-item ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for leg in results["legs"]:
        for train in leg.get("retrains", []):
            v = train["verify"]
            ok = v["all_scored"] and v["served_is_highest_margin"] and v["wrong_predicted_labels"] == 0 \
                and v["max_priority_error"] < 1e-6
            lines.append(
                f"| {leg['backend']} | {leg['items']:,} | {v['version']} | {v['open_items']:,} | "
                f"{v['open_not_scored_by_version']:,} | {v['max_priority_error']:.1e} | {v['wrong_predicted_labels']} | "
                f"{v['served_item']} ({v['served_margin']:.6f}) | {v['highest_margin_item']} ({v['highest_margin']:.6f}) | "
                f"{'yes' if ok else '**NO**'} | {v['next_item_ms']:.1f} |"
            )
    return lines


def _memory(results: dict) -> list[str]:
    lines = ["", "## Memory", "",
             "The 1M x 384 float32 matrix would be 1.5 GB held at once; the scorer reads 20,000-row chunks. Peak "
             f"RSS must not grow with the pool: the largest run's peak at most {MEMORY_GROWTH_LIMIT}x the smallest's.",
             "", "| backend | items | RSS after start-up MiB | peak RSS #1 MiB | peak RSS #2 MiB | bounded |",
             "|---|---:|---:|---:|---:|---|"]
    by_backend: dict[str, list[dict]] = {}
    for leg in results["legs"]:
        if "retrains" in leg:
            by_backend.setdefault(leg["backend"], []).append(leg)
    for backend, legs in by_backend.items():
        legs.sort(key=lambda leg: leg["items"])
        smallest = max(t["peak_rss_kib"] for t in legs[0]["retrains"])
        for leg in legs:
            peak = max(t["peak_rss_kib"] for t in leg["retrains"])
            verdict = "–" if leg is legs[0] else (
                f"{'PASS' if peak <= MEMORY_GROWTH_LIMIT * smallest else 'MISS'} ({peak / smallest:.2f}x)")
            lines.append(f"| {backend} | {leg['items']:,} | {_mib(leg['retrains'][0]['rss_before_kib'])} | "
                         f"{_mib(leg['retrains'][0]['peak_rss_kib'])} | {_mib(leg['retrains'][1]['peak_rss_kib'])} | "
                         f"{verdict} |")
    return lines


def _setup(results: dict) -> list[str]:
    lines = ["", "## Setup (not timed in the target)", "",
             "| backend | items | migrate s | project s | items s | feature rows s | labels s | VACUUM+CHECKPOINT s "
             "| total s | database GiB |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for leg in results["legs"]:
        if "setup" not in leg:
            continue
        s, t = leg["setup"], leg["setup"]["timings"]
        vacuum = s.get("vacuum")
        lines.append(
            f"| {leg['backend']} | {leg['items']:,} | {_s(leg['migrate_s'])} | {_s(t['project_s'])} | "
            f"{_s(t['items_s'])} | {_s(t['features_s'])} | {_s(t['labels_s'])} | "
            f"{_s(vacuum['vacuum_s'] + vacuum['checkpoint_s']) if vacuum else '–'} | {_s(s['total_s'])} | "
            f"{s['database_bytes'] / 2**30:.2f} |"
        )
    between = [(leg, t["before"]["vacuum"]) for leg in results["legs"] for t in leg.get("retrains", [])[1:]
               if t["before"].get("vacuum")]
    if between:
        lines += ["", "Before the second retrain (PostgreSQL only, as autovacuum would after a rewrite of every item "
                  "row; this server runs with autovacuum off): "
                  + "; ".join(f"{leg['items']:,} items: VACUUM (ANALYZE) {v['vacuum_s']:.0f} s, CHECKPOINT "
                              f"{v['checkpoint_s']:.0f} s" for leg, v in between) + "."]
    return lines


def _profiles(results: dict) -> list[str]:
    legs = [leg for leg in results["legs"] if leg.get("profiled")]
    if not legs:
        return []
    lines = ["", "## Profiles", "",
             "One more retrain per leg under cProfile (slower than the timed ones; not in the tables above). "
             "Functions by own time:"]
    for leg in legs:
        t = leg["profiled"]
        lines += ["", f"**{leg['backend']}, {leg['items']:,} items** (call {t['call_s']:.0f} s under the profiler; "
                  f"full tables in `work/{leg['backend']}-{leg['items']}/`):", "",
                  "| function | calls | own s | cumulative s |", "|---|---:|---:|---:|"]
        for row in t["profile"]["top_tottime"][:12]:
            lines.append(f"| `{row['function']}` | {row['calls']:,} | {row['tottime_s']:.1f} | {row['cumtime_s']:.1f} |")
    return lines


def _probes(results: dict) -> list[str]:
    legs = [leg for leg in results["legs"] if leg.get("probed")]
    if not legs:
        return []
    lines = ["", "## What an annotator sees during a retrain", "",
             "One more retrain per leg while a second process calls `queue_next_item` every 0.5 s (each call "
             "rolled back). *during swap* = calls that overlapped the swap transaction. *priority* = the "
             "served item's stored margin: the best item before the retrain, and the lowest served during the swap "
             "(lower means further down the queue).", "",
             "| backend | items | retrain s | swap s | calls during swap | max ms during swap | errors during swap "
             "| distinct items served during swap | priority before → lowest during swap | example error |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for leg in legs:
        t, p = leg["probed"], leg["probed"]["probe"]
        before, lowest = p.get("priority_before"), p.get("lowest_priority_during_swap")
        lines.append(
            f"| {leg['backend']} | {leg['items']:,} | {t['call_s']:.0f} | {t['swap_wall_s']:.0f} | "
            f"{p['calls_during_swap']} | {_s(p['max_ms_during_swap'], 0)} | {p['errors_during_swap']} | "
            f"{p.get('distinct_items_during_swap', '–')} | "
            f"{'–' if before is None else f'{before:.6f}'} → {'–' if lowest is None else f'{lowest:.6f}'} | "
            f"{(p['error_examples'] or [''])[0][:80]} |"
        )
    return lines


def _load(results: dict) -> list[str]:
    lines = ["", "## Load on the machine", "",
             "The machine is shared; timings are wall time. Load average (1, 5, 15 min) before and after each "
             "timed retrain:", ""]
    for leg in results["legs"]:
        for number, t in enumerate(leg.get("retrains", []), start=1):
            lines.append(f"- {leg['backend']} {leg['items']:,} #{number}: {' '.join(t['loadavg_before'])} → "
                         f"{' '.join(t['loadavg_after'])}")
    return lines


SWAP_VARIANTS = {
    "current": "the app's `queue_reorder` (UPDATE per item, executemany)",
    "current_big_cache": "the same, SQLite `PRAGMA cache_size` raised",
    "current_server_binding": "the same, statements bound server-side (prepared)",
    "bulk": "scores into a temp table, one `UPDATE ... FROM`",
    "bulk_reindex": "`bulk`, queue index dropped and rebuilt in the transaction",
    "versioned_insert": "write cost of a scores table keyed by (version, item): insert only",
}


def _alternatives(results: dict) -> list[str]:
    legs = [leg for leg in results["legs"] if leg.get("alternatives")]
    if not legs:
        return []
    lines = ["", "## Alternatives (prototypes in alternatives.py, not application code)", "",
             "On each leg's database after its retrains: the swap written other ways (every open item, one "
             "transaction, committed; each variant on a fresh connection, on PostgreSQL after VACUUM and "
             "CHECKPOINT), and the scorer's read of every feature row. *projected total* = the first retrain's "
             "total with its swap replaced by the variant's time (a projection, not a measurement)."]
    for leg in legs:
        swap, read = leg["alternatives"].get("swap"), leg["alternatives"].get("read")
        first = leg["retrains"][0]
        lines += ["", f"**{leg['backend']}, {leg['items']:,} items** (first retrain: {first['call_s']:.0f} s, "
                  f"of which swap {first['swap_wall_s']:.0f} s)", "",
                  "| swap variant | body s | commit s | total s | own CPU s | database CPU s | WAL MiB "
                  "| projected total s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for v in (swap or {}).get("variants", []):
            projected = first["call_s"] - first["swap_wall_s"] + v["total_s"]
            lines.append(
                f"| {v['variant']}: {SWAP_VARIANTS.get(v['variant'], '')} | {v['body_s']:.1f} | {v['commit_s']:.1f} "
                f"| **{v['total_s']:.1f}** | {_s(v.get('own_cpu_s'))} | {_s(v.get('database_cpu_s'))} | "
                f"{v['wal_mib'] if v.get('wal_mib') is not None else '–'} | "
                f"{'–' if v['variant'] == 'versioned_insert' else f'{projected:.0f}'} |"
            )
        if read:
            lines += ["", "| read of every feature row | s | own CPU s | database CPU s |", "|---|---:|---:|---:|"]
            for v in read["variants"]:
                lines.append(f"| {v['variant']} | {v['seconds']:.1f} | {v['own_cpu_s']:.1f} | "
                             f"{_s(v.get('database_cpu_s'))} |")
    return lines
