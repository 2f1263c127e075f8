"""Hierarchical aggregation: sites report to regional aggregators, regions to the coordinator.

A region turns its sites' changes into one update: their example-weighted mean
change, carrying the sites' total example count. Because FedAvg is a weighted
mean, FedAvg over the regional updates equals FedAvg over all the sites' updates
(up to float32 rounding of the regional means), so a hierarchy changes the
traffic, not the model. Robust rules do not compose this way: run them at the
regions, or flat.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from learners.federated.strategies.fedavg import WeightedSum, check_num_examples
from learners.federated.updates import Update


class RegionError(ValueError):
    """A region layout or an update that does not fit it."""


@dataclass(frozen=True)
class Region:
    """A regional aggregator and the sites that report to it.

    Attributes
    ----------
    name : str
        The region's name; its combined updates carry it as their ``site``.
    sites : tuple of str
        Its member sites, at least one, each once.
    """

    name: str
    sites: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "sites", tuple(self.sites))
        if not self.name:
            raise RegionError("a region needs a name")
        if not self.sites:
            raise RegionError(f"region {self.name!r} has no sites")
        repeated = sorted({site for site in self.sites if self.sites.count(site) > 1})
        if repeated:
            raise RegionError(f"region {self.name!r} lists sites {repeated} more than once")


def regions_index(regions: Iterable[Region]) -> dict[str, Region]:
    """Site name -> its region, checking that every site is in exactly one region.

    Raises
    ------
    RegionError
        Two regions with one name, or a site in two regions.
    """
    by_site: dict[str, Region] = {}
    names: set[str] = set()
    for region in regions:
        if region.name in names:
            raise RegionError(f"two regions are named {region.name!r}")
        names.add(region.name)
        for site in region.sites:
            if site in by_site:
                raise RegionError(f"site {site!r} is in both region {by_site[site].name!r} and {region.name!r}")
            by_site[site] = region
    return by_site


class _RegionalSum:
    """One region's running combination of its members' updates."""

    def __init__(self, region: Region) -> None:
        self.region = region
        self.changes = WeightedSum(f"region {region.name!r}")
        self.examples = 0
        self.base_version: int | None = None
        # metric -> [sum n*value, sum n, sum value, count]: the plain mean stands in when every count is 0.
        self.metrics: dict[str, list[float]] = {}

    def add(self, update: Update) -> None:
        examples = check_num_examples(update, f"region {self.region.name!r}")
        self.changes.add(update.arrays, examples, site=update.site)
        self.examples += examples
        if self.base_version is None or update.base_version < self.base_version:
            self.base_version = update.base_version
        for key, value in update.metrics.items():
            sums = self.metrics.setdefault(key, [0.0, 0.0, 0.0, 0.0])
            sums[0] += examples * float(value)
            sums[1] += examples
            sums[2] += float(value)
            sums[3] += 1

    def update(self) -> Update:
        assert self.changes.sums is not None and self.base_version is not None
        if self.examples > 0:
            arrays = self.changes.mean()
        else:
            # Members that trained on nothing changed nothing; a zero change with count 0 leaves FedAvg as it was.
            arrays = {name: np.zeros(value.shape, dtype=np.float32) for name, value in self.changes.sums.items()}
        metrics = {key: s[0] / s[1] if s[1] > 0 else s[2] / s[3] for key, s in self.metrics.items()}
        return Update(arrays, self.examples, metrics, site=self.region.name, base_version=self.base_version)


def regional_updates(updates: Iterable[Update], regions: Iterable[Region]) -> list[Update]:
    """One combined update per region, from one synchronous round of site updates.

    Each region's update has the example-weighted mean change of its sites,
    ``num_examples`` their sum, metrics their example-weighted means, ``site`` the
    region's name and ``base_version`` the oldest member's. Regions none of whose
    sites reported are left out. Updates are streamed: memory is one model per region.

    Parameters
    ----------
    updates : iterable of Update
        This round's site updates, at most one per site.
    regions : iterable of Region
        The layout; every reporting site must be in exactly one region.

    Returns
    -------
    list of Update
        In the order of `regions`.

    Raises
    ------
    RegionError
        A bad layout, an update from a site in no region, or two updates from one site.
    StrategyError
        A negative ``num_examples``.
    ArraysMismatch
        Sites of one region whose array names or shapes differ.
    """
    regions = list(regions)
    by_site = regions_index(regions)
    sums: dict[str, _RegionalSum] = {}
    seen: set[str] = set()
    for update in updates:
        region = by_site.get(update.site)
        if region is None:
            raise RegionError(f"site {update.site!r} is in no region; regions: {[r.name for r in regions]}")
        if update.site in seen:
            raise RegionError(f"site {update.site!r} sent two updates in one round")
        seen.add(update.site)
        sums.setdefault(region.name, _RegionalSum(region)).add(update)
    return [sums[region.name].update() for region in regions if region.name in sums]


class RegionalBuffer:
    """A regional aggregator for asynchronous rounds: forwards one combined update every `every` arrivals.

    Feed what `receive` or `flush` returns to a `BufferedAsyncAggregator`. The
    combined update's ``base_version`` is the oldest member's, so the coordinator
    discounts it for its stalest part; with ``every=1`` it is the site's update
    unchanged (but for ``site``), and the coordinator sees what it would without regions.

    Parameters
    ----------
    region : Region
        The region whose sites send here.
    every : int
        Arrivals per forwarded update, >= 1.
    """

    def __init__(self, region: Region, every: int) -> None:
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise RegionError(f"region {region.name!r}: every {every!r} must be an integer >= 1")
        self.region = region
        self.every = int(every)
        self._sites = frozenset(region.sites)
        self._sum = _RegionalSum(region)

    @property
    def pending(self) -> int:
        """Site updates received and not yet forwarded."""
        return self._sum.changes.count

    def receive(self, update: Update) -> Update | None:
        """Add a member's update; the combined update when this is the `every`-th arrival, else None.

        Raises
        ------
        RegionError
            An update from a site outside the region.
        """
        if update.site not in self._sites:
            raise RegionError(
                f"site {update.site!r} is not in region {self.region.name!r} (its sites: {sorted(self._sites)})"
            )
        self._sum.add(update)
        if self.pending < self.every:
            return None
        return self.flush()

    def flush(self) -> Update | None:
        """The combined update of whatever is pending (None if nothing is), emptying the buffer."""
        if self.pending == 0:
            return None
        combined = self._sum.update()
        self._sum = _RegionalSum(self.region)
        return combined


__all__ = ["Region", "RegionError", "RegionalBuffer", "regional_updates", "regions_index"]
