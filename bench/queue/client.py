"""One simulated annotator: a process with one persistent HTTP/1.1 connection.

Each cycle is POST next/ (lease the next item) then POST annotations/ (label
it with the paragraph's true topic, read from the item's id). Latencies are
taken around each request, from sending it to having read the whole response.
Only the standard library is used (http.client, json, time).
"""
from __future__ import annotations

import http.client
import json
import time

# The BBC corpus folder in an item id -> the label name (annotate.demo_data.TOPICS).
TOPIC_OF_FOLDER = {"business": "business", "entertainment": "entertainment", "politics": "politics",
                   "sports": "sport", "tech": "tech"}
_RETRYABLE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Session:
    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json",
                        "Accept": "application/json", "Connection": "keep-alive"}
        self.conn: http.client.HTTPConnection | None = None
        self.reconnects = 0

    def connect(self) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self.conn.connect()

    def post(self, path: str, body: dict | None, retry_ok: bool) -> tuple[int, dict | None, float]:
        """(status, parsed body, milliseconds). Reconnects once when the server had closed an idle
        connection before reading the request (`retry_ok` only where a replay is harmless)."""
        payload = json.dumps(body or {}).encode()
        for attempt in (0, 1):
            if self.conn is None:
                self.connect()
            started = time.perf_counter()
            try:
                self.conn.request("POST", path, body=payload, headers=self.headers)
                response = self.conn.getresponse()
                raw = response.read()
            except _RETRYABLE:
                self.conn.close()
                self.conn = None
                self.reconnects += 1
                if attempt == 0 and retry_ok:
                    continue
                raise
            elapsed = (time.perf_counter() - started) * 1000
            if response.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = {"non_json": raw[:200].decode("utf-8", "replace")}
            return response.status, parsed, elapsed
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def label_for(external_id: str) -> str:
    parts = external_id.split("/")
    return TOPIC_OF_FOLDER.get(parts[1], "business") if len(parts) > 1 else "business"


def annotator(index: int, port: int, project_id: int, token: str, cycles: int, start, results, control) -> None:
    """Process entry point: connect as told on `control`, wait for `start` (an Event), run `cycles`
    cycles, put a dict on `results`.

    `control` (a Pipe end) carries "connect" (open a new connection, answer with its local port, so the
    parent can see which gunicorn worker accepted it) until "go".
    """
    session = Session(port, token)
    next_path = f"/api/v1/projects/{project_id}/next/"
    annotate_path = f"/api/v1/projects/{project_id}/annotations/"
    next_ms: list[float] = []
    annotate_ms: list[float] = []
    served: list[int] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    created = 0
    done_cycles = 0
    queue_empty = False
    while True:
        message = control.recv()
        if message == "go":
            break
        session.close()
        session.connect()
        control.send(session.conn.sock.getsockname()[1])
    start.wait()
    began = time.monotonic()
    cpu_started = time.process_time()
    try:
        for _ in range(cycles):
            status, body, ms = session.post(next_path, None, retry_ok=True)
            next_ms.append(ms)
            statuses[f"next {status}"] = statuses.get(f"next {status}", 0) + 1
            if status != 200 or not isinstance(body, dict):
                errors.append(f"next: HTTP {status} {str(body)[:200]}")
                continue
            item = body.get("item")
            if item is None:
                queue_empty = True
                errors.append(f"next: queue closed: {body.get('code')}")
                break
            served.append(item["id"])
            status, body, ms = session.post(
                annotate_path, {"item": item["id"], "label": label_for(item["external_id"])}, retry_ok=False,
            )
            annotate_ms.append(ms)
            statuses[f"annotate {status}"] = statuses.get(f"annotate {status}", 0) + 1
            if status == 201:
                created += 1
                done_cycles += 1
            else:
                errors.append(f"annotate: HTTP {status} {str(body)[:200]}")
    except Exception as exc:  # report, do not hang the parent
        errors.append(f"client error: {type(exc).__name__}: {exc}")
    ended = time.monotonic()
    session.close()
    cpu_s = time.process_time() - cpu_started
    results.put({
        "index": index, "began": began, "ended": ended, "next_ms": next_ms, "annotate_ms": annotate_ms,
        "served": served, "statuses": statuses, "errors": errors[:20], "error_count": len(errors),
        "created": created, "cycles": done_cycles, "queue_empty": queue_empty,
        "reconnects": session.reconnects, "cpu_s": cpu_s,
    })


def warm_up(port: int, project_id: int, token: str, worker_cpu, connections: int = 8,
            min_rounds: int = 3, max_rounds: int = 40, min_cpu_s: float = 0.2) -> dict:
    """Untimed requests that change nothing: POST skip/ for an item id that does not exist (409).

    Each round opens `connections` connections, sends one request on every one
    before reading the answers (so several threads of a worker are busy at
    once), and closes them. Rounds go on until every gunicorn worker has used
    `min_cpu_s` of CPU since the warm-up began (the first request a worker
    serves imports the URLconf and the views; each thread opens its database
    connection), since the kernel, not the benchmark, decides which worker
    accepts a connection. `worker_cpu()` returns {pid: CPU seconds}.
    """
    path = f"/api/v1/projects/{project_id}/skip/"
    body = json.dumps({"item": 0}).encode()
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    start_cpu = worker_cpu()
    statuses: dict[int, int] = {}
    rounds = 0
    used: dict[int, float] = {}
    while rounds < max_rounds:
        rounds += 1
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=120) for _ in range(connections)]
        for conn in conns:
            conn.request("POST", path, body=body, headers=headers)
        for conn in conns:
            response = conn.getresponse()
            response.read()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            conn.close()
        now = worker_cpu()
        used = {pid: now[pid] - start_cpu.get(pid, 0.0) for pid in now}
        if rounds >= min_rounds and used and min(used.values()) >= min_cpu_s:
            break
    return {"rounds": rounds, "requests": sum(statuses.values()), "statuses": statuses,
            "worker_cpu_s": {str(pid): round(v, 3) for pid, v in used.items()},
            "all_workers_warm": bool(used) and min(used.values()) >= min_cpu_s}
