"""Web server memory: RSS of the gunicorn web workers after they served every kind of page.

    .venv/bin/python bench/queue/server_memory.py        # 10-20 s; server_memory.json, then RESULTS.md again

Web processes hold no maths (DESIGN.md): torch, scikit-learn, scipy and pandas
load only in Celery workers. This measures it on the real server: a fresh
SQLite data dir and embedded Redis, `gunicorn workbench.wsgi` with the flags
`manage.py runworkbench` passes (2 gthread workers), a login through the login
form, then every page kind (project pages, dashboards with their charts,
meta-models, admin, REST API, Swagger UI) fetched a few times, each on a new
connection so both workers serve some. It records each worker's VmRSS after
start-up and after the pages, which of those libraries each worker has mapped
(/proc/PID/maps), and, as a second view, the peak RSS (VmHWM) of a plain
process that only loads the URLconf and `workbench.wsgi`.

`--baseline FILE` copies an earlier server_memory.json (e.g. measured on an
older commit) into this one, so RESULTS.md shows both.
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parents[1]))  # workbench.embedded_redis

import report  # noqa: E402
from harness import log, machine_facts, run_child  # noqa: E402
from run import PYTHON, ROOT, WORK, Gunicorn, _children, _rss_kib, code_version, djside, leg_env  # noqa: E402

MATHS = ("torch", "sklearn", "scipy", "pandas")
MAPPED = re.compile(r"/site-packages/(torch|sklearn|scipy|pandas)(?:/|\.libs/)")
ROUNDS = 3

URLCONF_PROBE = f"""
import json, resource, sys
import workbench.wsgi
from django.urls import get_resolver
get_resolver().url_patterns
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
print("RESULT " + json.dumps({{"maths_loaded": sorted(m for m in {MATHS!r} if m in sys.modules),
                               "peak_rss_kib": int(status["VmHWM"].split()[0]),
                               "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def pages(project_id: int) -> list[str]:
    p = f"/projects/{project_id}"
    return ["/", f"{p}/", f"{p}/annotate/", f"{p}/settings/", f"{p}/import/", f"{p}/dashboard/quality/",
            f"{p}/dashboard/budget/", "/meta-models/", "/admin/", "/admin/annotate/project/",
            "/api/v1/projects/", f"/api/v1/projects/{project_id}/status/", "/api/v1/docs/", "/api/v1/schema/"]


def maths_mapped(pid: int) -> list[str]:
    """The maths packages whose files (extension modules, bundled .so) the process has mapped."""
    try:
        text = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    return sorted(set(MAPPED.findall(text)))


class Browser:
    """A logged-in visitor over http.client: cookies kept by hand, one new connection per request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Connection": "close", "Accept": "text/html,application/json"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode(errors="replace")
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, value = cookie.split(";", 1)[0].partition("=")
            self.cookies[name.strip()] = value.strip()
        conn.close()
        return response.status, text

    def log_in(self, username: str, password: str) -> None:
        status, html = self.request("GET", "/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        if status != 200 or token is None:
            raise RuntimeError(f"GET /login/ answered {status} without a CSRF token")
        status, _ = self.request("POST", "/login/", {"username": username, "password": password,
                                                     "csrfmiddlewaretoken": token.group(1)})
        if status != 302 or "sessionid" not in self.cookies:
            raise RuntimeError(f"POST /login/ answered {status}; not logged in")


def workers_now(master: int) -> dict[int, dict]:
    return {pid: {"rss_kib": _rss_kib(pid), "maths_mapped": maths_mapped(pid)} for pid in _children(master)}


def measure(env: dict, data_dir: Path) -> dict:
    from workbench.embedded_redis import EmbeddedRedis

    log_file = data_dir / "server-memory.log"
    redis_server = EmbeddedRedis(data_dir / "redis.sock")
    redis_server.start()
    server = None
    try:
        run_child([PYTHON, "manage.py", "migrate", "--no-input", "-v", "0"], env, log_file, "migrate")
        setup, _, _ = djside("web-setup", env=env, log_file=log_file)
        # The probe reads its own VmHWM: wait4's ru_maxrss would include this process's high-water
        # mark, which Linux carries over the fork and exec.
        probe, _, _ = run_child([PYTHON, "-c", URLCONF_PROBE], env, log_file, "urlconf probe")

        server = Gunicorn(env, data_dir / "gunicorn.log")
        server.wait_ready()
        time.sleep(1.0)  # let both workers finish booting
        idle = workers_now(server.process.pid)
        browser = Browser(server.port)
        browser.log_in(setup["username"], setup["password"])
        statuses: dict[str, list[int]] = {}
        started = time.perf_counter()
        for _ in range(ROUNDS):
            for path in pages(setup["project_id"]):
                status, _ = browser.request("GET", path)
                statuses.setdefault(path, []).append(status)
        seconds = time.perf_counter() - started
        served = workers_now(server.process.pid)
        master_rss = _rss_kib(server.process.pid)
    finally:
        if server is not None:
            server.stop()
        redis_server.stop()
    bad = {path: codes for path, codes in statuses.items() if any(code != 200 for code in codes)}
    return {
        "urlconf_process": probe,
        "gunicorn": {
            "cmd": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(server.args)),
            "master_rss_kib": master_rss,
            "workers": [{"pid": pid, "idle_rss_kib": idle.get(pid, {}).get("rss_kib"), **now}
                        for pid, now in sorted(served.items())],
            "page_requests": sum(len(codes) for codes in statuses.values()), "pages_seconds": round(seconds, 2),
            "pages": sorted(statuses), "non_200": bad,
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", default=str(HERE), help="where server_memory.json goes (default: bench/queue)")
    parser.add_argument("--baseline", help="an earlier server_memory.json to show beside this one")
    parser.add_argument("--code", help="what code this is, where the tree is not a git checkout")
    args = parser.parse_args(argv)
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    data_dir = WORK / "server-memory"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    env = leg_env("sqlite", data_dir)
    # Plain http on loopback: the cookies may not be HTTPS-only (README, Configuration).
    env.update(SESSION_COOKIE_SECURE="0", CSRF_COOKIE_SECURE="0")
    code = code_version()
    if args.code:
        code = {"commit": args.code, "subject": "", "uncommitted": []}
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.relpath(PYTHON, ROOT) if PYTHON.startswith(str(ROOT)) else PYTHON,
                             os.path.relpath(__file__, ROOT), *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine_facts(), "code": code, **measure(env, data_dir),
    }
    if args.baseline:
        result["baseline"] = json.loads(Path(args.baseline).read_text())
        result["baseline"].pop("baseline", None)
    (results_dir / "server_memory.json").write_text(json.dumps(result, indent=1) + "\n")
    for line in report.server_memory_lines(result):
        log(line)
    results_path = results_dir / "results.json"
    if results_path.exists():
        report.write(results_dir, json.loads(results_path.read_text()))
        log(f"rewrote {results_dir / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
