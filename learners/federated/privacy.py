"""Differential privacy for federated rounds: clip each site's change, add Gaussian noise, count the budget.

DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent
Language Models"): every site's change is clipped to L2 norm C and the sites
are weighted equally, so adding or removing one site moves the sum of changes
by at most C. Gaussian noise of std sigma*C on that sum makes each round a
(subsampled) Gaussian mechanism, and the Renyi-DP accountant (Mironov 2017, as
in opacus) composes the rounds. The guarantee is site-level: it covers
everything one site contributes, not just one of its rows.

Where the noise goes
--------------------
``"site"`` (distributed DP)
    Each of m expected sites adds N(0, (sigma*C)^2 / m) to its clipped change,
    so the sum carries N(0, (sigma*C)^2) with nobody adding it in the clear. It
    composes with secure aggregation (the server only ever sees the noisy
    sum). With robust rules, which see every update, it still runs, but each
    single update then carries only std sigma*C/sqrt(m): the accounted epsilon
    is for the sum, and one exposed update is protected as if by sigma/sqrt(m).
    If only k < m sites report, the sum carries k/m of the variance; account
    with `DifferentialPrivacy.effective_noise_multiplier`.
``"coordinator"`` (central DP)
    The coordinator adds N(0, (sigma*C)^2) to the sum of clipped changes; it
    must be trusted to see that sum before the noise.

Either way, the mean over m sites (sum / m) has noise of std sigma*C/m per coordinate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, Mapping

import numpy as np

from learners.federated.updates import Arrays, Update, arrays_copy, arrays_norm

Mode = Literal["site", "coordinator"]
MODES = ("site", "coordinator")


class PrivacyConfigError(ValueError):
    """A privacy parameter out of range; the message names it."""


class PrivacyInputError(ValueError):
    """An update the privacy step cannot take as it is (not finite, not clipped)."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_noise_multiplier(noise_multiplier: float) -> None:
    """Raise `PrivacyConfigError` unless sigma is a finite number > 0."""
    if not (_is_number(noise_multiplier) and math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise PrivacyConfigError(
            f"noise_multiplier must be a finite number > 0, got {noise_multiplier!r}: "
            "without noise there is no privacy guarantee (epsilon is infinite)"
        )


def check_sample_rate(sample_rate: float) -> None:
    """Raise `PrivacyConfigError` unless q is in (0, 1]."""
    if not (_is_number(sample_rate) and 0 < sample_rate <= 1):
        raise PrivacyConfigError(
            f"sample_rate must be in (0, 1], sites sampled per round / total sites, got {sample_rate!r}"
        )


def check_delta(delta: float) -> None:
    """Raise `PrivacyConfigError` unless delta is in (0, 1)."""
    if not (_is_number(delta) and 0 < delta < 1):
        raise PrivacyConfigError(f"delta must be in (0, 1), typically below 1 / number of sites, got {delta!r}")


def _check_sites(expected_sites: int) -> None:
    if isinstance(expected_sites, bool) or not isinstance(expected_sites, (int, np.integer)) or expected_sites < 1:
        raise PrivacyConfigError(f"expected_sites must be an int >= 1, got {expected_sites!r}")


@dataclass(frozen=True)
class DifferentialPrivacy:
    """Clipping and Gaussian noise for DP-FedAvg; works with any strategy.

    Parameters
    ----------
    clip_norm : float
        C, the L2 bound on each site's change (all arrays together).
    noise_multiplier : float
        sigma; the sum of changes gets noise of std sigma * C.
    delta : float
        The delta the epsilon is reported at.
    mode : {"site", "coordinator"}
        Who adds the noise; see the module docstring.

    Raises
    ------
    PrivacyConfigError
        A value out of range.
    """

    clip_norm: float
    noise_multiplier: float
    delta: float = 1e-5
    mode: Mode = "site"

    def __post_init__(self) -> None:
        if not (_is_number(self.clip_norm) and math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise PrivacyConfigError(f"clip_norm must be a finite number > 0, got {self.clip_norm!r}")
        check_noise_multiplier(self.noise_multiplier)
        check_delta(self.delta)
        if self.mode not in MODES:
            raise PrivacyConfigError(f"mode must be one of {MODES}, got {self.mode!r}")

    @property
    def sum_noise_std(self) -> float:
        """sigma * C: the noise std per coordinate of the sum of changes."""
        return self.noise_multiplier * self.clip_norm

    def mean_noise_std(self, expected_sites: int) -> float:
        """sigma * C / m: the noise std per coordinate of the mean over m sites."""
        _check_sites(expected_sites)
        return self.sum_noise_std / expected_sites

    def effective_noise_multiplier(self, reporting_sites: int, expected_sites: int) -> float:
        """The sigma to account for in site mode when only k of m sites reported: sigma * sqrt(k / m)."""
        _check_sites(expected_sites)
        if isinstance(reporting_sites, bool) or not 1 <= reporting_sites <= expected_sites:
            raise PrivacyConfigError(f"reporting_sites must be in 1..{expected_sites}, got {reporting_sites!r}")
        if self.mode == "coordinator":
            return self.noise_multiplier
        return self.noise_multiplier * math.sqrt(reporting_sites / expected_sites)

    def clip(self, update: Update) -> Update:
        """The update with its change scaled to L2 norm <= clip_norm and weight 1.

        num_examples becomes 1 (DP-FedAvg with fixed weights, McMahan et al. 2018):
        weighting by an example count, which the site chooses, would let one site
        move the weighted mean arbitrarily far, i.e. unbounded sensitivity.
        ``metrics["update_norm"]`` keeps the norm before clipping, for the
        site's own logs: it is not noised, so a backend that sends it to the
        coordinator spends privacy the accountant does not count.

        Raises
        ------
        PrivacyInputError
            The change holds NaN or infinity.
        """
        norm = arrays_norm(update.arrays)
        if not math.isfinite(norm):
            raise PrivacyInputError(f"update from {update.site or 'a site'} has a non-finite change (NaN or inf)")
        if norm <= self.clip_norm:
            arrays = arrays_copy(update.arrays)
        else:
            arrays = _scale_below(update.arrays, self.clip_norm / norm, self.clip_norm)
        return replace(update, arrays=arrays, num_examples=1, metrics={**update.metrics, "update_norm": norm})

    def site_noise(self, update: Update, expected_sites: int, rng: np.random.Generator) -> Update:
        """A clipped update plus N(0, (sigma*C)^2 / m) per coordinate, so m such updates sum to std sigma*C.

        Raises
        ------
        PrivacyConfigError
            This is a coordinator-mode config, or expected_sites < 1.
        PrivacyInputError
            The update was not clipped first.
        """
        self._require_mode("site", "site_noise")
        _check_sites(expected_sites)
        norm = arrays_norm(update.arrays)
        if update.num_examples != 1 or not norm <= self.clip_norm * (1 + 1e-6):
            raise PrivacyInputError(
                f"update from {update.site or 'a site'} has norm {norm:.4g} and num_examples {update.num_examples}: "
                f"call clip() first (norm <= {self.clip_norm:g}, num_examples 1) or the noise protects nothing"
            )
        noisy = _add_noise(update.arrays, self.sum_noise_std / math.sqrt(expected_sites), rng)
        return replace(update, arrays=noisy, metrics=dict(update.metrics))

    def coordinator_noise(self, change_sum: Mapping[str, np.ndarray], rng: np.random.Generator) -> Arrays:
        """The sum of clipped changes plus N(0, (sigma*C)^2) per coordinate."""
        self._require_mode("coordinator", "coordinator_noise")
        return _add_noise(change_sum, self.sum_noise_std, rng)

    def _require_mode(self, mode: str, method: str) -> None:
        if self.mode != mode:
            raise PrivacyConfigError(f"{method}() belongs to mode {mode!r}, but this config has mode {self.mode!r}")


def _scale_below(arrays: Mapping[str, np.ndarray], factor: float, bound: float) -> Arrays:
    # Rounding to float32 can leave the norm a hair above the bound; shrink until it is not.
    while True:
        scaled = {
            name: (np.asarray(value, dtype=np.float64) * factor).astype(np.float32) for name, value in arrays.items()
        }
        if arrays_norm(scaled) <= bound:
            return scaled
        factor *= 1 - 2.0**-20


def _add_noise(arrays: Mapping[str, np.ndarray], std: float, rng: np.random.Generator) -> Arrays:
    return {
        name: (np.asarray(value, dtype=np.float64) + rng.normal(0.0, std, size=np.shape(value))).astype(np.float32)
        for name, value in arrays.items()
    }


class PrivacyAccountant:
    """The epsilon spent so far, by Renyi DP (opacus's `RDPAccountant`).

    Step once per round with that round's sigma and sampling rate q = sites
    sampled / total sites. The analysis assumes Poisson sampling of sites;
    sampling a fixed number per round is close to it but not covered exactly.
    """

    def __init__(self) -> None:
        # opacus imports torch (about 2 s), so only an accountant pays for it.
        from opacus.accountants import RDPAccountant

        self._accountant = RDPAccountant()

    def step(self, noise_multiplier: float, sample_rate: float) -> None:
        """Record one round."""
        check_noise_multiplier(noise_multiplier)
        check_sample_rate(sample_rate)
        self._accountant.step(noise_multiplier=float(noise_multiplier), sample_rate=float(sample_rate))

    @property
    def rounds(self) -> int:
        """Rounds recorded."""
        return sum(steps for _, _, steps in self._accountant.history)

    def epsilon(self, delta: float) -> float:
        """Epsilon at `delta` over the rounds so far (0 before any)."""
        check_delta(delta)
        return float(self._accountant.get_epsilon(delta=delta))


def epsilon_for(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon after `steps` rounds at a fixed sigma and q, for planning a run.

    Raises
    ------
    PrivacyConfigError
        A value out of range; the message names it.
    """
    check_noise_multiplier(noise_multiplier)
    check_sample_rate(sample_rate)
    check_delta(delta)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise PrivacyConfigError(f"steps must be an int >= 0, got {steps!r}")
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    if steps:
        accountant.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    return float(accountant.get_epsilon(delta=delta))
