"""A site's side of the protocol: read a message from the coordinator, answer with an update.

`Site.handle` is the whole site-side runtime: the in-process backend calls it
directly and a site's Celery worker calls it from `workbench.federated_local_train`.
What a site answers is built here only, from the message and its own rows, so
the payload audit can reason about one place: the reply holds the weight
change (optionally clipped, noised and quantised), the example count and a
few scalar metrics.
"""
from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np

from learners.federated.limits import LimitRefused, SiteLimits
from learners.federated.local_training import LocalTraining, LocalTrainingError, local_train
from learners.federated.models import FederatedModel, ModelSpec
from learners.federated.privacy import DifferentialPrivacy
from learners.federated.secure_aggregation import SecAggClient, SecureAggregationError, weighted_vector
from learners.federated.updates import Update
from learners.federated.wire import Message, arrays_to_wire, message_decode, message_encode

Rows = tuple[np.ndarray, np.ndarray]


class SiteRefused(ValueError):
    """A site cannot take part in a round (wrong classes, no rows); the reply carries the reason."""


def classes_digest(classes: Sequence[str]) -> str:
    """What both sides compare to agree on the class order without sending the class names."""
    return hashlib.sha256("\x1f".join(classes).encode()).hexdigest()[:16]


class Site:
    """One site: its name, a way to read its labelled rows, and the model it last built.

    Parameters
    ----------
    name : str
    rows : callable returning (X, y)
        The site's labelled feature rows and class indices in the federation's class order.
        Called once per message, so a long-lived site sees new labels.
    classes : sequence of str or None
        The site's class names in order; checked against the coordinator's digest.
    limits : SiteLimits or None
        What the site agreed to (its offer); a request outside them is refused. None: a simulation
        that checks nothing.
    holdout : callable returning (X, y), or None
        Rows the site keeps aside: never trained on; the incoming global weights are evaluated on
        them (metrics only, and none under differential privacy).
    """

    # A secure-aggregation round's state between its four messages (round, client, vector); none outside one.
    _secure: dict[str, Any] | None

    def __init__(self, name: str, rows: Callable[[], Rows], classes: Sequence[str] | None = None, *,
                 limits: SiteLimits | None = None, holdout: Callable[[], Rows] | None = None) -> None:
        self.name = name
        self._rows = rows
        self.limits = limits
        self._holdout = holdout
        self._digest = classes_digest(classes) if classes is not None else None
        self._models: dict[ModelSpec, FederatedModel] = {}

    def handle(self, data: bytes) -> bytes:
        message = message_decode(data)
        try:
            if message.kind == "train":
                reply = self._train(message)
            elif message.kind in SECURE_STEPS:
                reply = SECURE_STEPS[message.kind](self, message)
            else:
                raise SiteRefused(f"unknown message kind {message.kind!r}")
        except (SiteRefused, LimitRefused, LocalTrainingError, SecureAggregationError) as exc:
            reply = Message(kind="refused", meta={"reason": str(exc)})
        return message_encode(reply)

    # -- secure aggregation: this site's state lives between the round's four messages ---------------------

    def _secure_start(self, meta: dict[str, Any], update: Update) -> Message:
        secure = meta["secure"]
        client = SecAggClient(int(secure["client_id"]), threshold=int(secure["threshold"]),
                              n_clients=int(secure["n_clients"]), scale_bits=int(secure["scale_bits"]),
                              clip=float(secure["clip"]))
        accuracy = update.metrics.get("accuracy_before", 0.0)
        vector = np.concatenate([weighted_vector(update), [update.num_examples * accuracy]])
        self._secure = {"round": meta["round"], "client": client, "vector": vector}
        keys = client.advertise_keys()
        return Message(kind="secagg_keys", meta={"round": meta["round"]},
                       arrays={k: np.frombuffer(v, dtype=np.uint8) for k, v in keys.items()})

    def _secure_state(self, message: Message) -> dict[str, Any]:
        state = getattr(self, "_secure", None)
        if state is None or state["round"] != message.meta.get("round"):
            raise SiteRefused("no secure-aggregation round in progress here (the site restarted?)")
        return state

    def _secure_share(self, message: Message) -> Message:
        state = self._secure_state(message)
        keys: dict[int, dict[str, bytes]] = {}
        for name, array in message.arrays.items():
            kind, client = name.split(".")
            keys.setdefault(int(client), {})[kind] = array.tobytes()
        ciphertexts = state["client"].share_keys(keys)
        return Message(kind="secagg_shares", meta={"round": state["round"]},
                       arrays={f"ct.{v}": np.frombuffer(c, dtype=np.uint8) for v, c in ciphertexts.items()})

    def _secure_input(self, message: Message) -> Message:
        state = self._secure_state(message)
        received = {int(name.split(".")[1]): array.tobytes() for name, array in message.arrays.items()}
        masked = state["client"].masked_input(state.pop("vector"), received)
        return Message(kind="secagg_masked", meta={"round": state["round"]}, arrays={"y": masked})

    def _secure_unmask(self, message: Message) -> Message:
        state = self._secure_state(message)
        reveal = state["client"].unmask(message.meta["survivors"], message.meta["dropped"])
        self._secure = None
        arrays = {f"b.{v}": np.frombuffer(c, dtype=np.uint8) for v, c in reveal["b"].items()}
        arrays |= {f"s.{v}": np.frombuffer(c, dtype=np.uint8) for v, c in reveal["s_sk"].items()}
        return Message(kind="secagg_reveal", meta={"round": state["round"]}, arrays=arrays)

    def _train(self, message: Message) -> Message:
        meta = message.meta
        if self._digest is not None and meta.get("classes_digest") != self._digest:
            raise SiteRefused("this site's classes differ from the federation's (names or order)")
        spec = ModelSpec(**meta["model"])
        model = self._models.get(spec) or self._models.setdefault(spec, FederatedModel(spec))
        X, y = self._rows()
        if X.shape[1] != spec.n_features:
            raise SiteRefused(f"this site's features have {X.shape[1]} columns; the model takes {spec.n_features}")
        if self.limits is not None:
            self.limits.check(meta, len(y))
        seed = int(meta.get("seed", 0))
        update = local_train(model, message.arrays, X, y, LocalTraining.from_config(meta.get("training", {})),
                             seed=seed)
        if self._holdout is not None:
            X_held, y_held = self._holdout()
            if len(y_held):
                held = model.evaluate(message.arrays, X_held, y_held)
                update = replace(update, metrics={**update.metrics, "heldout_accuracy": held["accuracy"],
                                                  "heldout_loss": held["loss"],
                                                  "heldout_examples": float(len(y_held))})
        # DP noise and stochastic rounding from this site's own entropy: the round's seed is broadcast, so
        # noise drawn from it would be the same at every site and could be regenerated and removed.
        rng = np.random.default_rng()
        privacy = meta.get("privacy")
        if privacy:
            dp = DifferentialPrivacy(clip_norm=privacy["clip_norm"], noise_multiplier=privacy["noise_multiplier"],
                                     mode=privacy["mode"])
            # Metrics (the norm before clipping, local loss and accuracy) are exact, un-noised facts about
            # the local rows that the accountant does not count: under differential privacy none leave.
            update = replace(dp.clip(update), metrics={})
            if dp.mode == "site":
                update = dp.site_noise(update, expected_sites=int(privacy["expected_sites"]), rng=rng)
        if "secure" in meta:
            return self._secure_start(meta, update)
        arrays, compression_meta = arrays_to_wire(meta.get("compression", "none"), update.arrays, rng)
        return Message(
            kind="update",
            meta={"num_examples": update.num_examples, "base_version": int(meta.get("version", 0)),
                  "metrics": {k: float(v) for k, v in update.metrics.items()}, "compression": compression_meta},
            arrays=arrays,
        )


SECURE_STEPS = {"secagg_share": Site._secure_share, "secagg_input": Site._secure_input,
                "secagg_unmask": Site._secure_unmask}
