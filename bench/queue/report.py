"""RESULTS.md from results.json: targets with PASS/MISS, the measured tables, plain words on misses.

The web-worker memory section comes from server_memory.json (server_memory.py) when it is there.
"""
from __future__ import annotations

import json
from pathlib import Path

TARGETS = {
    "next_p99_ms_1_annotator": 25.0,
    "cycles_per_s_8_annotators": 50.0,
    "duplicates": 0,
    "annotations_lost": 0,
    "scale_factor": 1.5,
    "import_rows_per_s": 20_000,
    "import_peak_rss_growth": 1.5,
}

# What the issue reports for the leading open-source annotation tool on the same workload.
REFERENCE = {
    "tool": "leading open-source annotation tool (figures quoted in the issue)",
    "items": 100_000,
    "next_p50_ms": 345, "next_p99_ms": 638,
    "cycles_per_s_8_annotators": 2.3,
    "duplicates": "6-9% of items handed to 2-3 annotators at once",
}


def _f(value, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}{unit}"
    return f"{value:,.{digits}f}{unit}"


def _mib(kib) -> str:
    return "-" if kib is None else f"{kib / 1024:,.0f} MiB"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "**MISS**")


def _n(items: int) -> str:
    if items >= 1_000_000 and items % 1_000_000 == 0:
        return f"{items // 1_000_000}M"
    if items >= 1_000 and items % 1_000 == 0:
        return f"{items // 1_000}k"
    return f"{items:,}"


def _lock_text(waits: dict | None, backend: str) -> str:
    if not waits or not waits.get("samples"):
        return "-"
    text = f"{waits['mean_waiting']:.1f} waiting (max {waits['max_waiting']})"
    if backend == "postgres":
        text += f" of {waits['mean_in_database']:.1f} in the database"
        if waits.get("waiting_in"):
            top = max(waits["waiting_in"].items(), key=lambda kv: kv[1])[0]
            text += f"; mostly in `{top}`"
    return text


def _why_latency(leg: dict) -> str:
    """What the leg's own measurements say about a slow next/ (no guessing beyond them)."""
    parts = []
    inproc = leg.get("inprocess") or {}
    scan = leg.get("queue_scan") or {}
    one = leg["phases"][0]
    if inproc:
        n = inproc["next"]
        parts.append(f"Without HTTP or other annotators a next/ took {n['ms_median']:.1f} ms in-process, "
                     f"{n['statements']} SQL statements of which {n['db_ms_mean']:.1f} ms inside the database driver")
    if scan.get("scan_ms_median") is not None:
        parts.append(f"the queue's candidate scan itself took {scan['scan_ms_median']:.2f} ms")
    text = "; ".join(parts)
    if text:
        round_trips = ""
        if inproc and inproc["next"]["db_ms_mean"] >= 0.3 * inproc["next"]["ms_median"]:
            round_trips = f" and to {inproc['next']['statements']} round trips to the database server"
        text += (": the time goes to Python work per request (Django, DRF, building ORM queries)"
                 f"{round_trips}, not to the scan. ")
    latencies = one["next_ms"]
    if inproc.get("gc_full_ms") and latencies["p99"] > 2 * latencies["p95"]:
        text += (f"The p99 comes from a few outliers (p95 {latencies['p95']:.1f} ms, max {latencies['max']:.1f} ms); "
                 f"one full garbage collection of a worker-sized heap ({inproc['gc_tracked_objects']:,} objects) "
                 f"took {inproc['gc_full_ms']:.0f} ms in-process, and a worker runs one every few hundred "
                 "requests. ")
    cpu = one.get("cpu_cores_used") or {}
    if cpu.get("other") is not None and cpu["other"] >= 0.3:
        text += (f"Other work used {cpu['other']:.2f} of the machine's {cpu.get('cores', 2)} cores during this "
                 "phase, which inflates the tail.")
    return text.strip()


def _why_throughput(leg: dict) -> str:
    many = leg["phases"][1]
    cpu = many.get("cpu_cores_used") or {}
    inproc = leg.get("inprocess") or {}
    parts = [f"The server used {many['server_cpu_ms_per_cycle']:.1f} ms of CPU per cycle"]
    if cpu:
        workers = " + ".join(f"{v:.2f}" for v in cpu.get("gunicorn_workers", []))
        parts.append(f"gunicorn kept {cpu.get('gunicorn', 0):.2f} cores busy ({workers} per worker)"
                     + (f", PostgreSQL {cpu['database']:.2f}" if leg["backend"] == "postgres" else "")
                     + f", other work {cpu.get('other', 0):.2f} of {cpu.get('cores', 2)}")
    waits = many.get("lock_waits") or {}
    if waits.get("samples"):
        where = ""
        if waits.get("waiting_in"):
            where = f", almost all in `{max(waits['waiting_in'].items(), key=lambda kv: kv[1])[0]}`"
        lock = "the writers' lock" if leg["backend"] == "sqlite" else "a row lock"
        parts.append(f"on average {waits['mean_waiting']:.1f} of the {many['annotators']} annotators' requests "
                     f"were waiting for {lock}{where}")
    text = "; ".join(parts) + "."
    if leg["backend"] == "postgres" and waits.get("waiting_in") and any(
            "annotate_project" in k for k in waits["waiting_in"]):
        text += (" Every POST annotations/ locks the project row first (annotation_create's _lock_project) and "
                 "keeps it until commit, so labels are written one at a time per project.")
    if leg["backend"] == "sqlite" and inproc and cpu and cpu.get("gunicorn", 0) < 1.5:
        held = inproc["next"]["txn_ms_mean"] + inproc["annotate"]["txn_ms_mean"]
        if held > 0:
            text += (f" Every next/ and annotations/ holds SQLite's database-wide write lock for its whole "
                     f"transaction ({inproc['next']['txn_ms_mean']:.1f} + {inproc['annotate']['txn_ms_mean']:.1f} ms "
                     "in-process, longer under load), so requests take turns on one lock and the CPUs stay "
                     "partly idle however many workers there are.")
    elif cpu and cpu.get("machine_busy", 0) >= 0.9 * cpu.get("cores", 2):
        text += " The machine's CPUs were saturated."
    return text


def evaluate(results: dict) -> tuple[list[dict], list[str]]:
    """Rows of (target, leg, value, verdict) and the sentences for every miss."""
    rows: list[dict] = []
    misses: list[str] = []
    legs = [leg for leg in results["legs"] if "error" not in leg]
    annotators = results["settings"]["annotators"]

    def add(target: str, where: str, value: str, ok: bool, miss: str) -> None:
        rows.append({"target": target, "where": where, "value": value, "verdict": _verdict(ok)})
        if not ok:
            misses.append(miss)

    for leg in legs:
        where = f"{leg['backend']}, {_n(leg['items'])}"
        one, many = leg["phases"]
        p99 = one["next_ms"]["p99"]
        add("next-item p99 <= 25 ms, 1 annotator", where, _f(p99, 1, " ms"), p99 is not None and p99 <= 25,
            f"{where}: next-item p99 with one annotator was {p99:.1f} ms, above the 25 ms target "
            f"(p50 {one['next_ms']['p50']:.1f} ms, p95 {one['next_ms']['p95']:.1f} ms). " + _why_latency(leg))
        cps = many["cycles_per_s"]
        add(f">= 50 cycles/s, {annotators} annotators", where, _f(cps, 1, "/s"), cps is not None and cps >= 50,
            f"{where}: {annotators} annotators together did {cps:.1f} cycles/s, below the 50 cycles/s target "
            f"(next p50/p99 {many['next_ms']['p50']:.0f}/{many['next_ms']['p99']:.0f} ms, annotate p50/p99 "
            f"{many['annotate_ms']['p50']:.0f}/{many['annotate_ms']['p99']:.0f} ms). " + _why_throughput(leg))
        dup = leg["duplicates_all_phases"]
        db_dup = leg["verify"]["items_served_to_2plus_annotators_db"]
        add("zero duplicates (overlap 1)", where, f"{dup} served / {db_dup} in DB", dup == 0 and db_dup == 0,
            f"{where}: {dup} items were served to more than one annotator ({db_dup} by the assignment rows).")
        retrain = leg.get("retrain_phase")
        if retrain:
            base, during = many["next_ms"]["p99"], retrain["next_ms"]["p99"]
            swaps = [v["swap_s"] for v in retrain["versions"] if v.get("swap_s") is not None]
            detail = (f"{retrain['versions_during_phase']} versions were made during the phase "
                      f"({retrain['retrains_requested']} retrains fell due, every {retrain['retrain_every']} labels), "
                      f"queue swaps {min(swaps, default=0):.2f}-{max(swaps, default=0):.2f} s under the write lock")
            add("retrains running: next-item p99 <= 2x phase 2", where, f"{during:.0f} vs {base:.0f} ms",
                during is not None and base is not None and during <= 2 * base,
                f"{where}: with retrains running the next-item p99 was {during:.0f} ms against {base:.0f} ms "
                f"without ({during / base:.1f}x, target 2x); {detail}.")
            rate, base_rate = retrain["cycles_per_s"], many["cycles_per_s"]
            add("retrains running: cycles/s >= 80% of phase 2", where, f"{rate:.1f} vs {base_rate:.1f}/s",
                rate is not None and base_rate is not None and rate >= 0.8 * base_rate,
                f"{where}: with retrains running {annotators} annotators did {rate:.1f} cycles/s against "
                f"{base_rate:.1f} without ({rate / base_rate:.0%}, target 80%); {detail}.")
        phases = leg["phases"] + ([retrain] if retrain else [])
        lost = sum(p["lost"] for p in phases)
        created = sum(p["created_201"] for p in phases)
        add("zero annotations lost", where, f"{lost} of {created:,}", lost == 0,
            f"{where}: {lost} of {created} annotations answered 201 are not in the database.")
        rate = leg["import"]["rows_per_s"]
        add(">= 20,000 rows/s import", where, _f(rate, 0, " rows/s"), rate is not None and rate >= 20_000,
            f"{where}: the importer did {rate:,.0f} rows/s on the plain-text CSV, below 20,000 rows/s "
            f"({leg['import']['rows_imported']:,} rows in {leg['import']['seconds']:.1f} s).")

    by_backend: dict[str, list[dict]] = {}
    for leg in legs:
        by_backend.setdefault(leg["backend"], []).append(leg)
    factor = TARGETS["scale_factor"]
    for backend, group in by_backend.items():
        if len(group) < 2:
            continue
        group = sorted(group, key=lambda l: l["items"])
        small, large = group[0], group[-1]
        where = f"{backend}, {_n(large['items'])} vs {_n(small['items'])}"
        a, b = small["phases"][0]["next_ms"]["p99"], large["phases"][0]["next_ms"]["p99"]
        add(f"next p99 (1 annotator) within {factor}x", where, f"{b:.1f} vs {a:.1f} ms ({b / a:.2f}x)",
            b <= factor * a,
            f"{where}: next-item p99 grew {b / a:.2f}x ({a:.1f} -> {b:.1f} ms), more than {factor}x.")
        a, b = small["phases"][1]["next_ms"]["p99"], large["phases"][1]["next_ms"]["p99"]
        add(f"next p99 ({annotators} annotators) within {factor}x", where, f"{b:.1f} vs {a:.1f} ms ({b / a:.2f}x)",
            b <= factor * a,
            f"{where}: next-item p99 with {annotators} annotators grew {b / a:.2f}x ({a:.1f} -> {b:.1f} ms), "
            f"more than {factor}x.")
        a, b = small["phases"][1]["cycles_per_s"], large["phases"][1]["cycles_per_s"]
        add(f"cycles/s ({annotators} annotators) within {factor}x", where, f"{b:.1f} vs {a:.1f} /s ({a / b:.2f}x)",
            b * factor >= a,
            f"{where}: throughput with {annotators} annotators fell {a / b:.2f}x ({a:.1f} -> {b:.1f} cycles/s), "
            f"more than {factor}x.")
        a, b = small["import"]["peak_rss_kib"], large["import"]["peak_rss_kib"]
        ratio = large["items"] / small["items"]
        add("import peak RSS bounded (< 1.5x for the larger file)", where,
            f"{b / 1024:.0f} vs {a / 1024:.0f} MiB ({b / a:.2f}x for {ratio:.0f}x rows)",
            b <= TARGETS["import_peak_rss_growth"] * a,
            f"{where}: the importer's peak RSS grew {b / a:.2f}x ({a / 1024:.0f} -> {b / 1024:.0f} MiB) "
            f"for {ratio:.0f}x the rows.")
    return rows, misses


def write(results_dir: Path, results: dict) -> None:
    """RESULTS.md in `results_dir` from `results`, with server_memory.json's section when that file exists."""
    memory_path = results_dir / "server_memory.json"
    memory = json.loads(memory_path.read_text()) if memory_path.exists() else None
    (results_dir / "RESULTS.md").write_text(render(results, memory))


def _worker_summary(memory: dict) -> tuple[str, str, str]:
    """(worker RSS after the pages, maths libraries mapped, URLconf process peak) of one server_memory run."""
    workers = memory["gunicorn"]["workers"]
    rss = " + ".join(_mib(w["rss_kib"]) for w in workers)
    mapped = sorted({lib for w in workers for lib in w["maths_mapped"]})
    return rss, ", ".join(mapped) or "none", _mib(memory["urlconf_process"]["peak_rss_kib"])


def server_memory_lines(memory: dict) -> list[str]:
    rss, mapped, probe = _worker_summary(memory)
    return [f"web workers after {memory['gunicorn']['page_requests']} page requests: {rss}; maths libraries "
            f"mapped: {mapped}; a process that loads the URLconf and workbench.wsgi peaks at {probe}"]


def render_server_memory(memory: dict) -> list[str]:
    out: list[str] = []
    w = out.append
    g = memory["gunicorn"]
    machine = memory["machine"]
    code = memory["code"]
    w("## Web worker memory\n")
    w(f"Measured by `{memory['command']}` on {memory['date']} (code `{code['commit']}`"
      + (f" plus uncommitted changes to {len(code['uncommitted'])} files" if code.get("uncommitted") else "")
      + f"; `nproc` = {machine['nproc']}, {machine['memory_gib']} GiB, Python {machine['python']}), apart from "
      "the run above. A fresh SQLite data dir and embedded Redis, "
      f"`{g['cmd']}`, a login through the form, then {len(g['pages'])} pages (project, annotate, settings, "
      f"import, both dashboards with their charts, meta-models, admin, REST API, Swagger UI, schema) "
      f"{g['page_requests'] // max(len(g['pages']), 1)} times each, one connection per request. VmRSS of each "
      "worker from /proc (\"at start\": after gunicorn's readiness request, which only one worker served; "
      "Django loads the URLconf on a worker's first request); \"maths mapped\": which of torch, sklearn, "
      "scipy, pandas have files mapped in the "
      "worker (/proc/PID/maps); \"URLconf process\": peak RSS (VmHWM) of a process that only imports "
      "`workbench.wsgi` and loads the URLconf.\n")
    w("| code | worker RSS at start | worker RSS after the pages | gunicorn master | maths mapped in workers "
      "| URLconf process peak RSS | non-200 pages |")
    w("|---|---|---|---|---|---|---|")
    for run in ([memory["baseline"]] if memory.get("baseline") else []) + [memory]:
        rss, mapped, probe = _worker_summary(run)
        idle = " + ".join(_mib(wk["idle_rss_kib"]) for wk in run["gunicorn"]["workers"])
        bad = ", ".join(f"`{path}` {codes}" for path, codes in run["gunicorn"]["non_200"].items()) or "none"
        changed = f" + {len(run['code']['uncommitted'])} uncommitted files" if run["code"].get("uncommitted") else ""
        w(f"| `{run['code']['commit']}`{changed} ({run['date'][:10]}) | {idle} | {rss} | "
          f"{_mib(run['gunicorn']['master_rss_kib'])} | {mapped} | {probe} | {bad} |")
    w("")
    return out


def render(results: dict, server_memory: dict | None = None) -> str:
    machine = results["machine"]
    settings = results["settings"]
    annotators = settings["annotators"]
    out: list[str] = []
    w = out.append
    w("# Queue benchmark results\n")
    w("Generated by `bench/queue/run.py` (see README.md for the method). Do not edit by hand: "
      "rerun the command below.\n")
    w(f"- **Date:** {results['date']}")
    w(f"- **Command:** `{results['command']}`" + ("  (via `make bench-queue`)" if results["command"].endswith("run.py") else ""))
    code = results.get("code")
    if code:
        w(f"- **Application code:** commit `{code['commit']}` ({code['subject']})"
          + (f" plus uncommitted changes to {', '.join(f'`{f}`' for f in code['uncommitted'])}" if code["uncommitted"] else ""))
        end = results.get("code_at_end")
        if end and end != code:
            w(f"- **Warning:** the application code changed while the benchmark ran (now `{end['commit']}`"
              + (" plus uncommitted changes" if end["uncommitted"] else "") + "); the legs did not all measure the same code.")
    run_s = results.get("run_seconds")
    w(f"- **Run time:** {run_s / 60:.1f} min" if run_s else "- **Run time:** -")
    w(f"- **Machine:** `nproc` = {machine['nproc']} ({machine['cpu']}), {machine['memory_gib']} GiB memory, "
      f"Linux {machine['kernel']}, Python {machine['python']}, SQLite {machine['sqlite']}"
      + (f", {machine['postgres']}" if machine.get("postgres") else ""))
    w(f"- **Load average at start:** {' / '.join(machine['loadavg_at_start'])} (1/5/15 min). The machine has 2 cores "
      "shared by gunicorn, the database, Redis and the client processes, and other work may run at the same time.")
    w(f"- **Workload:** {', '.join(_n(n) for n in settings['items'])} items, all scored by the model; "
      f"{settings['cycles']} cycles per annotator; phase 1 = 1 annotator, phase 2 = {annotators} annotators "
      f"at once (own user, token, process); overlap 1; no retrain during phases 1 and 2; the retrain phase "
      f"repeats phase 2 with new annotators, retrain_every = {settings.get('retrain_every', 10)} and one Celery "
      f"worker retraining (when the results have it).")
    for skipped in results.get("skipped", []):
        w(f"- **Skipped:** {skipped}")
    for leg in results["legs"]:
        if "error" in leg:
            w(f"- **Failed:** {leg['backend']}, {_n(leg['items'])}: `{leg['error'][-500:]}`")
    w("")

    rows, misses = evaluate(results)
    w("## Targets\n")
    if rows:
        w("| Target | Where | Measured | Verdict |")
        w("|---|---|---|---|")
        for row in rows:
            w(f"| {row['target']} | {row['where']} | {row['value']} | {row['verdict']} |")
    else:
        w("No leg finished.")
    w("")
    ref = results.get("reference", REFERENCE)
    w(f"**Reference** ({ref['tool']}, {ref['items']:,} items): next-item p50/p99 "
      f"{ref['next_p50_ms']}/{ref['next_p99_ms']} ms, {ref['cycles_per_s_8_annotators']} cycles/s with 8 annotators, "
      f"{ref['duplicates']}.\n")
    w("### Missed targets, in plain words\n")
    if misses:
        for miss in misses:
            w(f"- {miss}")
    else:
        w("None: every target was met.")
    w("")

    legs = [leg for leg in results["legs"] if "error" not in leg]
    if not legs:
        return "\n".join(out) + "\n"
    w("## Annotation loop over HTTP\n")
    w("Latencies in milliseconds, measured by the client from sending the request to reading the whole response "
      "(with 200 requests, p99 is about the 2nd-3rd slowest, so one hiccup moves it; every latency is in "
      "results.json). "
      "A cycle is one POST next/ and one POST annotations/. Duplicates: items served to more than one annotator. "
      "Lost: 201 answers minus annotation rows in the database. Server RSS: peak of the summed VmRSS of the "
      "gunicorn master and its 2 workers, sampled every 100 ms.\n")
    w("| Backend | Items | Phase | next p50 | next p95 | next p99 | annotate p50 | annotate p95 | annotate p99 "
      "| cycles/s | cycles | duplicates | lost | errors | server peak RSS | server CPU per cycle |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for leg in legs:
        for phase in leg["phases"]:
            n, a = phase["next_ms"], phase["annotate_ms"]
            w(f"| {leg['backend']} | {_n(leg['items'])} | {phase['name']} | {_f(n['p50'])} | {_f(n['p95'])} | "
              f"{_f(n['p99'])} | {_f(a['p50'])} | {_f(a['p95'])} | {_f(a['p99'])} | {_f(phase['cycles_per_s'])} | "
              f"{phase['cycles_done']:,} | {phase['duplicates']} | {phase['lost']} | {phase['error_count']} | "
              f"{_mib(phase['server_peak_rss_kib'])} | {_f(phase['server_cpu_ms_per_cycle'])} ms |")
    w(f"| reference tool | {_n(ref['items'])} | 1 / 8 annotators | {ref['next_p50_ms']} | - | {ref['next_p99_ms']} "
      f"| - | - | - | {ref['cycles_per_s_8_annotators']} (8) | - | 6-9% | - | - | - | - |")
    w("")

    w("### Where the CPU went during the HTTP phases\n")
    w("In cores (the machine has {cores}; 1.0 = one core busy for the whole phase), from /proc: gunicorn = "
      "master + workers (SQLite work happens inside them), per worker = each worker's share, postgres = the "
      "PostgreSQL backends connected to the benchmark database, clients = the annotator processes' own CPU "
      "time, other = everything else on the machine (other jobs, PostgreSQL background processes). A large "
      "`other` means the numbers above were taken on a shared, busy machine.\n".format(cores=results["machine"]["nproc"]))
    w("Connections: how many annotators' persistent connections each worker held (in brackets: where the "
      "kernel put each one on its first try; see README, 'Connections and workers').\n")
    w("Lock waits: requests waiting for a database lock, averaged over samples every 200 ms (SQLite: "
      "waiters on the writers' file lock; PostgreSQL: backends waiting on a lock / backends running a "
      "statement, and the statements waited in).\n")
    w("| Backend | Items | Phase | wall | connections | machine busy | gunicorn | per worker | postgres | clients | other | lock waits | load avg before -> after |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for leg in legs:
        for phase in leg["phases"]:
            c = phase.get("cpu_cores_used") or {}
            workers = " + ".join(f"{v:.2f}" for v in c.get("gunicorn_workers", [])) or "-"
            database = c.get("database", c.get("postgres"))
            placed = phase.get("placement") or {}
            conns = (" + ".join(str(v) for v in placed.get("connections_per_worker", []))
                     + f" ({' + '.join(str(v) for v in placed.get('first_try_per_worker', []))})") if placed else "-"
            w(f"| {leg['backend']} | {_n(leg['items'])} | {phase['name']} | {phase['wall_s']:.1f} s | {conns} | "
              f"{_f(c.get('machine_busy'), 2)} | {_f(c.get('gunicorn'), 2)} | {workers} | "
              f"{_f(database, 2) if leg['backend'] == 'postgres' else '-'} | "
              f"{_f(c.get('clients'), 2)} | {_f(c.get('other'), 2)} | {_lock_text(phase.get('lock_waits'), leg['backend'])} | "
              f"{' / '.join(phase.get('loadavg_before', []))} -> {' / '.join(phase.get('loadavg_after', []))} |")
    w("")

    if any(leg.get("inprocess") for leg in legs):
        w("### Server-side cost of one request, without HTTP\n")
        w("After the phases, a fresh annotator does 30 cycles through Django's test client in one process "
          "(no gunicorn, no network, no other annotator). Statements: SQL statements per request. "
          "In driver: mean time inside the database driver's execute(). Transaction open: first to last "
          "statement inside the request's atomic block (on SQLite the database write lock is held that long). "
          "Full GC: one `gc.collect()` of that process's heap afterwards, the pause a gunicorn worker takes "
          "inside some request every few hundred requests.\n")
        w("| Backend | Items | next median | statements | in driver | transaction open | annotate median | "
          "statements | in driver | transaction open | full GC |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for leg in legs:
            ip = leg.get("inprocess")
            if not ip:
                continue
            n, a = ip["next"], ip["annotate"]
            w(f"| {leg['backend']} | {_n(leg['items'])} | {n['ms_median']:.1f} ms | {n['statements']} | "
              f"{n['db_ms_mean']:.1f} ms | {n['txn_ms_mean']:.1f} ms | {a['ms_median']:.1f} ms | {a['statements']} | "
              f"{a['db_ms_mean']:.1f} ms | {a['txn_ms_mean']:.1f} ms | "
              f"{_f(ip.get('gc_full_ms'), 0, ' ms')} ({_f(ip.get('gc_tracked_objects'))} objects) |")
        w("")

    w("## Import (plain-text CSV through `import_file`)\n")
    w("Rows/s is rows imported over the time `import_file` took (one transaction, batches of "
      "IMPORT_BATCH_ROWS). Process wall time adds Python and Django start-up. Peak RSS is the importing "
      "process's maximum resident set (getrusage), RSS before is after Django start-up, before the import.\n")
    w("| Backend | Rows | CSV size | import_file | rows/s | process wall | RSS before | peak RSS |")
    w("|---|---|---|---|---|---|---|---|")
    for leg in legs:
        imp = leg["import"]
        size = results["csv"][str(leg["items"])]["bytes"]
        w(f"| {leg['backend']} | {imp['rows_imported']:,} | {size / 2**20:,.0f} MiB | {imp['seconds']:.1f} s | "
          f"{imp['rows_per_s']:,.0f} | {imp['process_wall_s']:.1f} s | {_mib(imp['rss_before_kib'])} | "
          f"{_mib(imp['peak_rss_kib'])} |")
    w("")

    w("## Scoring (the real `model_version_train`)\n")
    w("Train: fit on the seed labels (with cross-validation). Predict: `predict_proba` over every open item "
      "(`score_seconds`). Whole call: reading the items, training, predicting and writing the new queue order "
      "(`queue_reorder`) in one transaction.\n")
    w("| Backend | Items scored | seed labels | CV accuracy | train | predict | whole call | peak RSS |"
      + (" VACUUM (ANALYZE) + CHECKPOINT |" if any(l.get("vacuum") for l in legs) else ""))
    w("|---|---|---|---|---|---|---|---|" + ("---|" if any(l.get("vacuum") for l in legs) else ""))
    for leg in legs:
        s = leg["train"]["summary"]
        acc = (s.get("metrics") or {}).get("accuracy")
        line = (f"| {leg['backend']} | {s['items_scored']:,} | {s['trained_on']} | {_f(acc, 2)} | "
                f"{s['train_seconds']:.1f} s | {s['score_seconds']:.1f} s | {leg['train']['seconds']:.1f} s | "
                f"{_mib(leg['train']['peak_rss_kib'])} |")
        if any(l.get("vacuum") for l in legs):
            vacuum = leg.get("vacuum") or {}
            line += (f" {_f(vacuum.get('seconds'), 1, ' s')}"
                     + (f" + CHECKPOINT {vacuum['checkpoint_seconds']:.1f} s" if "checkpoint_seconds" in vacuum else "")
                     + " |")
        w(line)
    w("")

    w("## The queue scan\n")
    w("The candidate query `next/` runs (`annotate.services.queue._candidates(...)[:1]`), planned and timed "
      "in-process after the HTTP phases (median of 20 runs; PostgreSQL plans are EXPLAIN ANALYZE).\n")
    for leg in legs:
        scan = leg.get("queue_scan") or {}
        w(f"**{leg['backend']}, {_n(leg['items'])}**: median {_f(scan.get('scan_ms_median'), 2)} ms, "
          f"max {_f(scan.get('scan_ms_max'), 2)} ms\n")
        w("```")
        for line in scan.get("plan", []):
            w(line)
        w("```\n")

    w("## Per leg\n")
    w("| Backend | Items | leg time | migrate | server idle RSS | load avg before | code at leg start |")
    w("|---|---|---|---|---|---|---|")
    for leg in legs:
        code = leg.get("code") or {}
        w(f"| {leg['backend']} | {_n(leg['items'])} | {leg['seconds'] / 60:.1f} min | {leg['migrate_s']:.1f} s | "
          f"{_mib(leg.get('server_idle_rss_kib'))} | {' / '.join(leg['loadavg_before'])} | "
          f"`{code.get('commit', '-')}`{' + uncommitted' if code.get('uncommitted') else ''} |")
    w("")
    if server_memory is not None:
        out += render_server_memory(server_memory)
    return "\n".join(out) + "\n"
