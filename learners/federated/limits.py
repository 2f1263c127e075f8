"""What a site agreed to: the limits it checks every request against before it trains.

A site's offer (its consent to a federation) carries these. The coordinator
asks; the site decides. A request outside the limits is refused with the
reason, and nothing is trained.

Why the defaults (docs/federated.md, "What a site agrees to"): one SGD step on
one example hands the coordinator that example. For a linear softmax model the
weight change is ``-lr * outer(p - y, x)`` and the bias change ``-lr * (p - y)``,
so dividing a row of the first by the matching entry of the second gives ``x``
exactly, and the sign pattern of ``p - y`` gives the label. Averaging over a
batch of b rows mixes b examples into each step; with other sites in the round
(and secure aggregation) the coordinator sees only a sum over sites. So a site
trains only on batches of at least 16 rows, only when it has at least that
many labelled rows, for at most 200 steps a round, and only in rounds with at
least one other site.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

DEFAULT_MIN_BATCH_SIZE = 16
DEFAULT_MAX_STEPS = 200
DEFAULT_MAX_EPOCHS = 10
DEFAULT_MIN_OTHER_SITES = 1


class LimitRefused(ValueError):
    """A request outside what the site agreed to; the message is the reason sent back and kept in its ledger."""


@dataclass(frozen=True)
class SiteLimits:
    """Attributes
    ----------
    min_batch_size : int
        Smallest local batch; the site also needs at least this many labelled training rows.
    max_steps : int
        Most SGD steps per round (a request without a cap counts epochs x batches).
    max_epochs : int
    strategies : tuple of str
        Aggregation strategies the site takes part in; empty: any.
    dp_max_clip_norm, dp_min_noise_multiplier : float or None
        A DP floor: the site answers only when it clips to at most this norm and adds (itself) at
        least this much noise. None: no DP required.
    secure_aggregation : bool
        Answer only in secure-aggregation rounds.
    min_other_sites : int
        Other sites the round must be sent to.
    """

    min_batch_size: int = DEFAULT_MIN_BATCH_SIZE
    max_steps: int = DEFAULT_MAX_STEPS
    max_epochs: int = DEFAULT_MAX_EPOCHS
    strategies: tuple[str, ...] = field(default_factory=tuple)
    dp_max_clip_norm: float | None = None
    dp_min_noise_multiplier: float | None = None
    secure_aggregation: bool = False
    min_other_sites: int = DEFAULT_MIN_OTHER_SITES

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategies", tuple(self.strategies))
        for name in ("min_batch_size", "max_steps", "max_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LimitRefused(f"{name}: a whole number >= 1, not {value!r}")
        if not isinstance(self.min_other_sites, int) or self.min_other_sites < 0:
            raise LimitRefused(f"min_other_sites: a whole number >= 0, not {self.min_other_sites!r}")
        if (self.dp_max_clip_norm is None) != (self.dp_min_noise_multiplier is None):
            raise LimitRefused("dp floor: give both dp_max_clip_norm and dp_min_noise_multiplier, or neither")
        if self.dp_max_clip_norm is not None and not self.dp_max_clip_norm > 0:
            raise LimitRefused(f"dp_max_clip_norm: a number > 0, not {self.dp_max_clip_norm!r}")
        if self.dp_min_noise_multiplier is not None and not self.dp_min_noise_multiplier > 0:
            raise LimitRefused(f"dp_min_noise_multiplier: a number > 0, not {self.dp_min_noise_multiplier!r}")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["strategies"] = list(self.strategies)
        return data

    def check(self, meta: Mapping[str, Any], n_rows: int) -> None:
        """Raise LimitRefused unless a "train" request with header `meta` is within the limits."""
        training = meta.get("training") or {}
        strategy = meta.get("strategy")
        if self.strategies and strategy not in self.strategies:
            raise LimitRefused(f"strategy {strategy!r} is not one this site takes part in ({list(self.strategies)})")
        sites = meta.get("sites")
        if not isinstance(sites, int) or sites - 1 < self.min_other_sites:
            raise LimitRefused(f"the round is sent to {sites} site(s); this site answers only with at least "
                               f"{self.min_other_sites} other site(s) in the round")
        if self.secure_aggregation and not meta.get("secure_aggregation"):
            raise LimitRefused("this site answers only in secure-aggregation rounds")
        batch = training.get("batch_size", 32)
        if not isinstance(batch, int) or batch < self.min_batch_size:
            raise LimitRefused(f"batch_size {batch} is below this site's minimum of {self.min_batch_size}")
        if n_rows < self.min_batch_size:
            raise LimitRefused(f"this site has {n_rows} labelled training row(s), fewer than its minimum batch of "
                               f"{self.min_batch_size}; it does not train")
        epochs = training.get("epochs", 1)
        if not isinstance(epochs, int) or epochs > self.max_epochs:
            raise LimitRefused(f"epochs {epochs} is above this site's maximum of {self.max_epochs}")
        steps = epochs * math.ceil(n_rows / batch)
        if training.get("max_steps") is not None:
            steps = min(steps, int(training["max_steps"]))
        if steps > self.max_steps:
            raise LimitRefused(f"the request asks for {steps} SGD steps; this site takes at most {self.max_steps} "
                               "a round (set training.max_steps)")
        if self.dp_max_clip_norm is not None:
            privacy = meta.get("privacy") or {}
            if not privacy:
                raise LimitRefused("this site answers only with differential privacy (clip_norm <= "
                                   f"{self.dp_max_clip_norm:g}, noise_multiplier >= {self.dp_min_noise_multiplier:g})")
            if privacy.get("mode") != "site":
                raise LimitRefused("this site's DP floor needs the noise added at the site (privacy mode 'site')")
            if float(privacy.get("clip_norm", math.inf)) > self.dp_max_clip_norm:
                raise LimitRefused(f"clip_norm {privacy.get('clip_norm')} is weaker than this site's floor "
                                   f"(at most {self.dp_max_clip_norm:g})")
            if float(privacy.get("noise_multiplier", 0.0)) < (self.dp_min_noise_multiplier or 0.0):
                raise LimitRefused(f"noise_multiplier {privacy.get('noise_multiplier')} is weaker than this site's "
                                   f"floor (at least {self.dp_min_noise_multiplier:g})")
