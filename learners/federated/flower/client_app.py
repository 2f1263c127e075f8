"""The Flower ClientApp: a site's answer, from the site's own workbench, to each coordinator message.

Flower starts a fresh process for every message, so this module imports only
flwr; Django, the site's settings and torch load inside the handler. The
SuperNode's node-config says which workbench deployment is this site's:

    database-url  the site's own database (DATABASE_URL), e.g. sqlite:////srv/site/site.sqlite3
    data-dir      its WORKBENCH_DATA_DIR
    answer        optional "module:function" answering instead of the workbench (tests and benchmarks);
                  called as function(federation=..., message=..., transport="flower") -> bytes, without Django

The answer itself is `learners.services.federated_site.site_answer`: it finds the
site's offer for the federation named in the message, checks the site's limits,
trains, writes the site's ledger and returns the reply bytes.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

RECORD = "workbench"  # as learners.federated.backends.flower_grid.RECORD, which this module must not import
DEFAULT_ANSWER = "learners.services.federated_site:site_answer"

app = ClientApp()


class NodeConfigError(ValueError):
    """The SuperNode's --node-config lacks what this site needs; the message names the key."""


def _answer_function(node_config: dict[str, object]) -> Callable[..., bytes]:
    spec = str(node_config.get("answer") or "")
    if not spec:
        for key, variable in (("database-url", "DATABASE_URL"), ("data-dir", "WORKBENCH_DATA_DIR")):
            value = node_config.get(key)
            if not isinstance(value, str) or not value:
                raise NodeConfigError(f"the SuperNode's --node-config has no {key!r}; "
                                      f"it names this site's workbench ({variable})")
            os.environ[variable] = value
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "workbench.settings")
        import django

        django.setup()
        spec = DEFAULT_ANSWER
    module, _, name = spec.partition(":")
    function: Callable[..., bytes] = getattr(importlib.import_module(module), name)
    return function


def _answer(message: Message, context: Context) -> Message:
    record = message.content.config_records[RECORD]
    federation, data = record.get("federation"), record.get("message")
    if not isinstance(federation, str) or not isinstance(data, bytes):
        raise ValueError(f"message {message.metadata.message_id} carries no federation name and message bytes")
    reply = _answer_function(dict(context.node_config))(federation=federation, message=data, transport="flower")
    return Message(RecordDict({RECORD: ConfigRecord({"message": bytes(reply)})}), reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    return _answer(message, context)


@app.query("hello")
def hello(message: Message, context: Context) -> Message:
    return _answer(message, context)
