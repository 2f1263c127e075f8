"""An annotator over HTTP, free of Django imports so it can run in a spawned process."""
from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit


def annotator_session(base_url: str, token: str, project_id: int, cycles: int, label: str) -> dict:
    """`cycles` x (lease the next item, label it) through the JSON API."""
    url = urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def post(path: str, body: dict) -> tuple[int, dict]:
        conn.request("POST", path, body=json.dumps(body), headers=headers)
        response = conn.getresponse()
        raw = response.read()
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return response.status, json.loads(raw)
        return response.status, {"non_json_body": raw[:300].decode(errors="replace")}

    served, saved, errors = [], [], []
    for _ in range(cycles):
        status, body = post(f"/api/v1/projects/{project_id}/next/", {})
        if status != 200 or body.get("item") is None:
            errors.append((status, body))
            break
        item_id = body["item"]["id"]
        served.append(item_id)
        status, body = post(f"/api/v1/projects/{project_id}/annotations/", {"item": item_id, "label": label})
        if status == 201:
            saved.append(body["id"])
        else:
            errors.append((status, body))
    conn.close()
    return {"served": served, "saved": saved, "errors": errors}
