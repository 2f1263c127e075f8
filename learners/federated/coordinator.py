"""The coordinator: runs rounds over a backend with a strategy and the optional layers.

Synchronous rounds send the global weights to the round's sites, collect
replies until every site answered or the deadline passed (late sites are
dropouts, never a hang), and aggregate what arrived. Asynchronous runs keep
every site busy and aggregate every K arrivals (FedBuff), each weighted by its
staleness. Either can go through regional aggregators (sites report to a
region, regions report to the coordinator) and compress what they send.

Privacy layers compose with the strategy: differential privacy clips (and, in
"site" mode, noises) each update at the site and the accountant reports ε after
every aggregation; secure aggregation (synchronous, weighted-mean strategies)
lets the coordinator see only the sum.

Every message that crosses a boundary is recorded in a `PayloadAudit`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from learners.federated.asynchronous import BufferedAsyncAggregator
from learners.federated.backends.base import Backend, Reply
from learners.federated.compression import compressor_create
from learners.federated.hierarchy import Region, regional_updates
from learners.federated.local_training import LocalTraining
from learners.federated.models import ModelSpec
from learners.federated.privacy import DifferentialPrivacy, PrivacyAccountant
from learners.federated.strategies import Strategy, StrategyError
from learners.federated.updates import Arrays, Update, arrays_check_like, arrays_copy
from learners.federated.wire import (
    Message,
    PayloadAudit,
    arrays_from_wire,
    arrays_to_wire,
    message_decode,
    message_encode,
)

Progress = Callable[[str, int, int], None]


class FederationError(RuntimeError):
    """A run that cannot go on (too few sites answered, a malformed update); the message says why."""


@dataclass
class FederationPlan:
    """Everything a run needs besides the backend.

    Attributes
    ----------
    strategy : Strategy
    model : ModelSpec
    training : LocalTraining
        Sent to the sites each round (FedProx's ``proximal_mu`` is taken from the strategy's fit_config).
    rounds : int
    sites_per_round : int or None
        Sites sampled uniformly each round; None takes every site.
    timeout : float
        Seconds (backend time) a round waits for replies before counting the rest as dropouts.
    min_updates : int
        A round with fewer updates leaves the weights unchanged.
    classes_digest : str or None
        `learners.federated.site.classes_digest` of the class names; sites check it.
    privacy : DifferentialPrivacy or None
    secure : bool
        Secure aggregation (needs a weighted-mean strategy and no regions).
    compression : str
        "none" or "int8" for what sites and regions send towards the coordinator.
    regions : list of Region or None
    seed : int
    """

    strategy: Strategy
    model: ModelSpec
    training: LocalTraining = field(default_factory=LocalTraining)
    rounds: int = 10
    sites_per_round: int | None = None
    timeout: float = 60.0
    min_updates: int = 1
    classes_digest: str | None = None
    privacy: DifferentialPrivacy | None = None
    secure: bool = False
    compression: str = "none"
    regions: list[Region] | None = None
    seed: int = 0


def plan_as_dict(plan: FederationPlan, *, strategy_parameters: dict[str, Any]) -> dict[str, Any]:
    """A plan as JSON-safe data (for a runtime that runs the coordinator in another process, e.g. Flower's)."""
    privacy = plan.privacy
    return {
        "strategy": plan.strategy.name, "strategy_parameters": dict(strategy_parameters),
        "model": plan.model.as_dict(), "training": dict(plan.training.__dict__), "rounds": plan.rounds,
        "sites_per_round": plan.sites_per_round, "timeout": plan.timeout, "min_updates": plan.min_updates,
        "classes_digest": plan.classes_digest, "secure": plan.secure, "compression": plan.compression,
        "privacy": None if privacy is None else {"clip_norm": privacy.clip_norm,
                                                 "noise_multiplier": privacy.noise_multiplier,
                                                 "delta": privacy.delta, "mode": privacy.mode},
        "regions": None if plan.regions is None else [[r.name, list(r.sites)] for r in plan.regions],
        "seed": plan.seed,
    }


def plan_from_dict(data: dict[str, Any]) -> FederationPlan:
    """The plan `plan_as_dict` described."""
    from learners.federated.strategies import strategy_create

    return FederationPlan(
        strategy=strategy_create(data["strategy"], **data.get("strategy_parameters", {})),
        model=ModelSpec(**data["model"]), training=LocalTraining.from_config(data.get("training", {})),
        rounds=int(data["rounds"]), sites_per_round=data.get("sites_per_round"), timeout=float(data["timeout"]),
        min_updates=int(data["min_updates"]), classes_digest=data.get("classes_digest"),
        privacy=None if not data.get("privacy") else DifferentialPrivacy(**data["privacy"]),
        secure=bool(data.get("secure")), compression=data.get("compression", "none"),
        regions=None if data.get("regions") is None else [Region(n, tuple(m)) for n, m in data["regions"]],
        seed=int(data.get("seed", 0)),
    )


@dataclass
class RoundResult:
    """What one aggregation did, in numbers an admin page can show."""

    number: int
    version: int
    participants: list[str]
    dropouts: dict[str, str]
    updates: int
    bytes_out: int
    bytes_in: int  # what reached the coordinator itself
    site_bytes_in: int  # what left the sites (equals bytes_in without regions)
    metrics: dict[str, float]
    epsilon: float | None
    started_at: float
    finished_at: float
    wall_seconds: float
    evaluation: dict[str, float] = field(default_factory=dict)
    aggregated: bool = True

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Coordinator:
    def __init__(
        self, backend: Backend, plan: FederationPlan, *, weights: Arrays | None = None,
        audit: PayloadAudit | None = None, evaluate: Callable[[Arrays], dict[str, float]] | None = None,
    ) -> None:
        self.backend = backend
        self.plan = plan
        self.audit = audit if audit is not None else PayloadAudit()
        self.weights = arrays_copy(weights if weights is not None else plan.model.initial_weights(plan.seed))
        arrays_check_like(plan.model.initial_weights(plan.seed), self.weights, what="initial weights")
        self.version = 0
        self.results: list[RoundResult] = []
        self._evaluate = evaluate
        self._rng = np.random.default_rng([plan.seed, 1])
        compressor_create(plan.compression)  # an unknown name fails here, before any site is asked
        self.accountant = PrivacyAccountant() if plan.privacy is not None else None
        self._region_of: dict[str, Region] = {}
        for region in plan.regions or []:
            for site in region.sites:
                self._region_of[site] = region
        self._check_plan()

    def _check_plan(self) -> None:
        plan, sites = self.plan, self.backend.sites()
        if not sites:
            raise FederationError("the backend has no sites")
        if plan.sites_per_round is not None and not 1 <= plan.sites_per_round <= len(sites):
            raise FederationError(f"sites_per_round {plan.sites_per_round} must be between 1 and {len(sites)}")
        if plan.regions is not None:
            missing = sorted(set(sites) - set(self._region_of))
            if missing:
                raise FederationError(f"sites {missing[:5]} are in no region")
        if plan.secure:
            from learners.federated.secure_aggregation import check_strategy

            check_strategy(plan.strategy)
            if plan.regions:
                raise FederationError("secure aggregation runs between the sites and one aggregator; "
                                      "use it without regions")

    # -- the message a round sends ------------------------------------------------------------------------

    def _train_message(self, round_number: int, expected_sites: int, extra: dict[str, Any] | None = None,
                       seed: int | None = None) -> bytes:
        plan = self.plan
        training = {**plan.training.__dict__, **plan.strategy.fit_config(round_number)}
        # "strategy" and "sites" are there for the site to check against what it agreed to (its offer).
        meta: dict[str, Any] = {
            "round": round_number, "version": self.version, "model": plan.model.as_dict(),
            "training": training, "seed": int(self._rng.integers(2**31)) if seed is None else seed,
            "compression": plan.compression, "strategy": plan.strategy.name, "sites": expected_sites,
            "secure_aggregation": plan.secure,
        }
        if plan.classes_digest is not None:
            meta["classes_digest"] = plan.classes_digest
        if plan.privacy is not None:
            meta["privacy"] = {"clip_norm": plan.privacy.clip_norm, "noise_multiplier": plan.privacy.noise_multiplier,
                              "mode": plan.privacy.mode, "expected_sites": expected_sites}
        return message_encode(Message(kind="train", meta={**meta, **(extra or {})}, arrays=self.weights))

    def _update_from(self, reply: Reply, round_number: int, dropouts: dict[str, str]) -> Update | None:
        if reply.data is None:
            dropouts[reply.site] = reply.error or "failed"
            return None
        self.audit.record("in", reply.site, reply.data, round=round_number)
        message = message_decode(reply.data)
        if message.kind == "refused":
            dropouts[reply.site] = f"refused: {message.meta.get('reason', '')}"
            return None
        if message.kind not in ("update", "region_update"):
            raise FederationError(f"site {reply.site!r} answered {message.kind!r}, expected 'update'")
        arrays = arrays_from_wire(message.arrays, message.meta.get("compression") or {})
        arrays_check_like(self.weights, arrays, what=f"update from site {reply.site!r}")
        return Update(arrays=arrays, num_examples=int(message.meta["num_examples"]),
                      metrics=dict(message.meta.get("metrics", {})), site=reply.site,
                      base_version=int(message.meta.get("base_version", 0)))

    def _through_regions(self, updates: list[Update], round_number: int) -> tuple[list[Update], int]:
        """Each region's one combined update, as sent (compressed) to the coordinator; and their bytes."""
        combined, ingress = [], 0
        for update in regional_updates(updates, self.plan.regions or []):
            received, size = self._through_regions_one(update, round_number)
            combined.append(received)
            ingress += size
        return combined, ingress

    # -- synchronous rounds ---------------------------------------------------------------------------------

    def _sample(self) -> list[str]:
        sites = self.backend.sites()
        if self.plan.sites_per_round is None or self.plan.sites_per_round == len(sites):
            return sites
        chosen = self._rng.choice(len(sites), size=self.plan.sites_per_round, replace=False)
        return [sites[i] for i in sorted(chosen)]

    def round(self) -> RoundResult:
        """One synchronous round: send, collect until all replied or the deadline, aggregate."""
        if self.plan.secure:
            from learners.federated.secure_round import secure_round

            return secure_round(self)
        plan = self.plan
        number = len(self.results) + 1
        wall = time.perf_counter()
        started = self.backend.now()
        participants = self._sample()
        dropouts: dict[str, str] = dict(self.backend.unreachable(participants))
        data = self._train_message(number, expected_sites=len(participants))
        for site in participants:
            if site in dropouts:
                continue
            self.audit.record("out", site, data, round=number)
            self.backend.send(site, data)
        metric_sums: dict[str, float] = {}
        counts = {"updates": 0, "examples": 0}
        deadline = started + plan.timeout
        outstanding = set(participants) - set(dropouts)

        def arrivals() -> Iterator[Update]:
            while outstanding:
                reply = self.backend.receive(deadline)
                if reply is None:
                    break
                outstanding.discard(reply.site)
                update = self._update_from(reply, number, dropouts)
                if update is None:
                    continue
                counts["updates"] += 1
                counts["examples"] += update.num_examples
                for key, value in update.metrics.items():
                    metric_sums[key] = metric_sums.get(key, 0.0) + value * update.num_examples
                yield update

        streaming = plan.strategy.weighted_mean and not plan.regions and plan.privacy is None
        if streaming:
            # FedAvg and friends sum as updates arrive: 10,000 clients never sit in memory at once.
            change = _combine_or_none(plan.strategy, arrivals(), plan.min_updates, counts)
            updates_in = None
        else:
            updates_in = list(arrivals())
            change = None
        for site in sorted(outstanding):
            self.backend.abandon(site)
            dropouts[site] = f"no reply within {plan.timeout:g} s"
        site_bytes_in = self.audit.bytes("in", round=number)
        bytes_in = site_bytes_in
        if updates_in is not None and len(updates_in) >= plan.min_updates:
            if plan.regions:
                updates_in, bytes_in = self._through_regions(updates_in, number)
            change = plan.strategy.combine(updates_in)
            if plan.privacy is not None and plan.privacy.mode == "coordinator":
                # clipped updates weigh 1 each, so the change is their mean: noise the sum, then divide
                k = counts["updates"]
                noisy = plan.privacy.coordinator_noise({n: v * k for n, v in change.items()}, self._rng)
                change = {n: (v / k).astype(np.float32) for n, v in noisy.items()}
        aggregated = False
        if change is not None and counts["updates"] >= plan.min_updates:
            aggregated = True
            self.weights = plan.strategy.apply(self.weights, change)
            self.version += 1
            if self.accountant is not None:
                self.accountant.step(self._round_noise_multiplier(counts["updates"], len(participants)),
                                     len(participants) / len(self.backend.sites()))
        return self._finish(number, participants, dropouts, counts, metric_sums, bytes_in, site_bytes_in,
                            started, wall, aggregated)

    def _finish(self, number: int, participants: list[str], dropouts: dict[str, str], counts: dict[str, int],
                metric_sums: dict[str, float], bytes_in: int, site_bytes_in: int, started: float, wall: float,
                aggregated: bool) -> RoundResult:
        examples = counts["examples"]
        result = RoundResult(
            number=number, version=self.version, participants=list(participants), dropouts=dropouts,
            updates=counts["updates"], bytes_out=self.audit.bytes("out", round=number), bytes_in=bytes_in,
            site_bytes_in=site_bytes_in,
            metrics={k: v / examples for k, v in metric_sums.items()} if examples else {},
            epsilon=self.epsilon(), started_at=started, finished_at=self.backend.now(),
            wall_seconds=time.perf_counter() - wall,
            evaluation=self._evaluate(self.weights) if self._evaluate else {}, aggregated=aggregated,
        )
        self.results.append(result)
        return result

    def _round_noise_multiplier(self, reporting: int, expected: int) -> float:
        """σ the sum actually carried: in site mode each site adds its share, so dropouts leave less noise."""
        privacy = self.plan.privacy
        assert privacy is not None  # called only to step the accountant, which only a plan with privacy has
        if privacy.mode == "site":
            return privacy.effective_noise_multiplier(reporting, expected)
        return privacy.noise_multiplier

    def epsilon(self) -> float | None:
        if self.accountant is None or not self.accountant.rounds:
            return None
        assert self.plan.privacy is not None  # the accountant exists only for a plan with privacy
        return self.accountant.epsilon(self.plan.privacy.delta)

    def run(self, *, progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
            ) -> list[RoundResult]:
        """`plan.rounds` synchronous rounds; `should_stop` is asked before each."""
        for index in range(self.plan.rounds):
            if should_stop is not None and should_stop():
                break
            if progress:
                progress("federated rounds", index, self.plan.rounds)
            self.round()
        if progress:
            progress("federated rounds", len(self.results), self.plan.rounds)
        return self.results

    # -- asynchronous (FedBuff) ----------------------------------------------------------------------------

    def run_async(
        self, *, buffer_size: int, aggregations: int, server_lr: float = 1.0, staleness_exponent: float = 0.5,
        max_staleness: int | None = None, concurrency: int | None = None, region_every: int = 1,
        progress: Progress | None = None, should_stop: Callable[[], bool] | None = None,
    ) -> list[RoundResult]:
        """Keep `concurrency` sites (default: all) training; aggregate every `buffer_size` arrivals.

        Each result is one aggregation. A site is sent the newest weights as soon as it answers, so
        fast sites contribute often and stragglers arrive stale and count less (s(τ) = (1+τ)^-a).
        A site silent for `plan.timeout` is a dropout and is asked again with the newest weights.
        With regions, each region forwards one combined update every `region_every` arrivals.
        """
        from learners.federated.hierarchy import RegionalBuffer

        plan = self.plan
        if plan.secure:
            raise FederationError("secure aggregation needs synchronous rounds (every masked input of a round)")
        aggregator = BufferedAsyncAggregator(
            self.weights, buffer_size=buffer_size, server_lr=server_lr, staleness_exponent=staleness_exponent,
            max_staleness=max_staleness, strategy=plan.strategy if plan.strategy.weighted_mean else None,
        )
        if not plan.strategy.weighted_mean:
            raise FederationError(f"strategy {plan.strategy.name!r} needs a whole round of updates; "
                                  "asynchronous runs take fedavg, fedprox, fedadam or fedavgm")
        buffers = {r.name: RegionalBuffer(r, region_every) for r in plan.regions or []}
        sites = self.backend.sites()
        if concurrency is not None and not 1 <= concurrency <= len(sites):
            raise FederationError(f"concurrency {concurrency} must be between 1 and {len(sites)}")
        sent_at: dict[str, float] = {}
        messages: dict[int, bytes] = {}
        number = len(self.results) + 1

        def new_window() -> dict:
            return {"participants": [], "dropouts": {}, "updates": 0, "examples": 0, "metrics": {}, "bytes_in": 0,
                    "site_bytes_in": 0, "bytes_out": 0, "started": self.backend.now(), "wall": time.perf_counter()}

        def next_site(finished: str) -> str:
            """With every site busy, the one that finished goes again; else a site drawn from the idle ones."""
            if concurrency is None:
                return finished
            idle = [site for site in sites if site not in sent_at]
            return idle[int(self._rng.integers(len(idle)))]

        window = new_window()

        def dispatch(site: str) -> None:
            if self.version not in messages:
                messages.clear()
                messages[self.version] = self._train_message(number, expected_sites=buffer_size)
            data = messages[self.version]
            self.audit.record("out", site, data, round=number)
            window["bytes_out"] += len(data)
            self.backend.send(site, data)
            sent_at[site] = self.backend.now()

        def take(update: Update, ingress: int) -> bool:
            window["bytes_in"] += ingress
            window["updates"] += 1
            window["examples"] += update.num_examples
            for key, value in update.metrics.items():
                window["metrics"][key] = window["metrics"].get(key, 0.0) + value * update.num_examples
            return aggregator.receive(update)

        first = sites if concurrency is None else [sites[i] for i in sorted(
            self._rng.choice(len(sites), size=concurrency, replace=False))]
        for site in first:
            dispatch(site)
        aggregated_total = 0
        while aggregated_total < aggregations and not (should_stop is not None and should_stop()):
            if progress:
                progress("federated aggregations", aggregated_total, aggregations)
            reply = self.backend.receive(min(sent_at.values()) + plan.timeout if sent_at else None)
            if reply is None:
                late = [s for s, t in sent_at.items() if self.backend.now() >= t + plan.timeout]
                if not late:
                    raise FederationError("no site is training and none answered")
                for site in late:
                    self.backend.abandon(site)
                    del sent_at[site]
                    window["dropouts"][site] = f"no reply within {plan.timeout:g} s"
                    dispatch(next_site(site))
                continue
            sent_at.pop(reply.site, None)
            size = len(reply.data) if reply.data is not None else 0
            update = self._update_from(reply, number, window["dropouts"])
            window["site_bytes_in"] += size
            aggregated = False
            if update is not None:
                window["participants"].append(reply.site)
                if buffers:
                    region = self._region_of[reply.site]
                    combined = buffers[region.name].receive(update)
                    if combined is not None:
                        forwarded, ingress = self._through_regions_one(combined, number)
                        aggregated = take(forwarded, ingress)
                else:
                    aggregated = take(update, size)
            if aggregated:
                self.weights = aggregator.weights
                self.version = aggregator.version
                if self.accountant is not None:
                    assert plan.privacy is not None  # the accountant exists only for a plan with privacy
                    self.accountant.step(plan.privacy.noise_multiplier, min(1.0, buffer_size / len(sites)))
                self._finish_window(number, window)
                aggregated_total += 1
                number += 1
                window = new_window()
            dispatch(next_site(reply.site))
        for site in list(sent_at):
            self.backend.abandon(site)
        if progress:
            progress("federated aggregations", aggregated_total, aggregations)
        return self.results

    def _through_regions_one(self, update: Update, round_number: int) -> tuple[Update, int]:
        arrays, compression = arrays_to_wire(self.plan.compression, update.arrays, self._rng)
        data = message_encode(Message(kind="region_update", arrays=arrays, meta={
            "num_examples": update.num_examples, "base_version": update.base_version,
            "metrics": {k: float(v) for k, v in update.metrics.items()}, "compression": compression}))
        received = self._update_from(Reply(site=update.site, data=data, at=self.backend.now()), round_number, {})
        assert received is not None  # None is for a failed or refused site; this message is our own update
        return received, len(data)

    def _finish_window(self, number: int, window: dict) -> None:
        examples = window["examples"]
        result = RoundResult(
            number=number, version=self.version, participants=window["participants"], dropouts=window["dropouts"],
            updates=window["updates"], bytes_out=window["bytes_out"], bytes_in=window["bytes_in"],
            site_bytes_in=window["site_bytes_in"],
            metrics={k: v / examples for k, v in window["metrics"].items()} if examples else {},
            epsilon=self.epsilon(), started_at=window["started"], finished_at=self.backend.now(),
            wall_seconds=time.perf_counter() - window["wall"],
            evaluation=self._evaluate(self.weights) if self._evaluate else {},
        )
        self.results.append(result)


def _combine_or_none(strategy: Strategy, updates: Iterator[Update], minimum: int, counts: dict) -> Arrays | None:
    """The strategy's combine over a stream, or None when fewer than `minimum` updates came."""
    try:
        change = strategy.combine(updates)
    except StrategyError:
        if counts["updates"]:
            raise
        return None  # nobody answered: nothing to combine
    return change if counts["updates"] >= minimum else None
