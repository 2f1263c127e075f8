"""The site's side of a federation: what this workbench offered, what it answers, and its ledger.

A site is a workbench deployment that offered one of its projects to a
federation run by someone else (`SiteOffer`, written by the project's manager).
Every request that reaches the site, over Celery or Flower, comes through
`site_answer`: it finds the offer for the federation the request names (never a
project id chosen by the sender), checks the sender's identity, that the offer
is switched on and that the request is within the offer's limits, trains, and
writes each message received and sent (or the refusal, with its reason) to the
site's own ledger (`SiteLedgerEntry`) before the reply leaves.
"""
from __future__ import annotations

import base64
import hashlib
import logging
from typing import Any

from annotate.access import Action, project_for
from annotate.models import Project
from learners.federated.identity import IdentityError, public_key_check, request_verify
from learners.federated.limits import LimitRefused, SiteLimits
from learners.federated.site import Site, SiteRefused
from learners.federated.wire import Message, PayloadAudit, WireError, message_decode, message_encode
from learners.models import SiteLedgerEntry, SiteOffer

logger = logging.getLogger(__name__)

TRANSPORTS = {"celery", "flower"}
LIMIT_FIELDS = set(SiteLimits.__dataclass_fields__)


class OfferInvalid(ValueError):
    """An offer that cannot be recorded; the message starts with the field's name."""


# -- offers -------------------------------------------------------------------------------------------------


def offer_create(*, user, project_id: Any, federation: str, site_name: str, transport: str = "celery",
                 coordinator_key: str = "", coordinator_certificate: str = "", limits: dict | None = None,
                 holdout_fraction: float = 0.2, enabled: bool = True) -> SiteOffer:
    """Offer a project this user manages to a federation; checked as a whole, nothing written on error.

    Raises annotate.access's NotFound/PermissionDenied for a project the user may not manage.
    """
    project = project_for(user, project_id, Action.MANAGE)
    federation = (federation or "").strip()
    if not federation or len(federation) > 200:
        raise OfferInvalid("federation: give the federation's name at its coordinator (1 to 200 characters)")
    if SiteOffer.objects.filter(federation=federation).exists():
        raise OfferInvalid(f"federation: this site already has an offer for {federation!r}; change that one")
    if not site_name or not site_name.replace("-", "").replace("_", "").isalnum() or len(site_name) > 50:
        raise OfferInvalid("site_name: letters, digits, - and _ (what the coordinator calls this site)")
    if transport not in TRANSPORTS:
        raise OfferInvalid(f"transport: {transport!r}; choose celery or flower")
    if transport == "celery":
        try:
            coordinator_key = public_key_check(coordinator_key)
        except IdentityError as exc:
            raise OfferInvalid(f"coordinator_key: {exc} (the coordinator prints it when the federation is "
                               "created)") from None
    limits_checked = limits_from(limits or {})
    if isinstance(holdout_fraction, bool) or not isinstance(holdout_fraction, (int, float)) \
            or not 0 <= holdout_fraction < 1:
        raise OfferInvalid("holdout_fraction: a number from 0 up to (not including) 1")
    return SiteOffer.objects.create(
        federation=federation, site_name=site_name, project=project, transport=transport,
        coordinator_key=coordinator_key if transport == "celery" else "",
        coordinator_certificate=(coordinator_certificate or "").strip().lower(), limits=limits_checked.as_dict(),
        holdout_fraction=float(holdout_fraction), enabled=bool(enabled), offered_by=user)


def limits_from(data: dict) -> SiteLimits:
    unknown = sorted(set(data) - LIMIT_FIELDS)
    if unknown:
        raise OfferInvalid(f"limits: {unknown[0]!r} is not a limit; known: {sorted(LIMIT_FIELDS)}")
    try:
        return SiteLimits(**data)
    except (LimitRefused, TypeError) as exc:
        raise OfferInvalid(f"limits: {exc}") from None


def offer_set_enabled(user, offer_id: Any, enabled: bool) -> SiteOffer:
    offer = offer_for(user, offer_id)
    offer.enabled = bool(enabled)
    offer.save(update_fields=["enabled", "updated_at"])
    return offer


def offer_for(user, offer_id: Any) -> SiteOffer:
    """The offer, if `user` manages its project (access's NotFound otherwise, as for the project)."""
    from annotate.access import valid_id
    from annotate.errors import ProjectNotFound

    pk = valid_id(offer_id)
    offer = SiteOffer.objects.select_related("project").filter(pk=pk).first() if pk is not None else None
    if offer is None:
        raise ProjectNotFound("no such offer")
    project_for(user, offer.project_id, Action.MANAGE)
    return offer


def offers_visible(user):
    from annotate.access import projects_managed

    return SiteOffer.objects.filter(project__in=projects_managed(user)).select_related("project")


# -- answering ------------------------------------------------------------------------------------------------


def _ledger(offer: SiteOffer | None, federation: str, transport: str, direction: str, data: bytes | None = None, *,
            kind: str = "", reason: str = "", round_: int | None = None) -> None:
    """One ledger entry; a reply is filed under the round of the request it answers (`round_`)."""
    entry = SiteLedgerEntry(offer=offer, federation=federation[:200], transport=transport, direction=direction,
                            kind=kind[:200], reason=reason)
    if data is not None:
        try:
            record = PayloadAudit().record("in", "", data).as_dict()
        except (WireError, ValueError, KeyError):
            entry.nbytes = len(data)
        else:
            entry.kind = record["kind"][:200]
            entry.nbytes, entry.arrays, entry.meta = record["nbytes"], record["arrays"], record["meta"]
            if round_ is None:
                round_ = _round_of(record["meta"])
    entry.round = round_
    entry.save()


def _round_of(meta: dict) -> int | None:
    value = meta.get("round")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _refused(offer: SiteOffer | None, federation: str, transport: str, reason: str, *, kind: str = "",
             received: bytes | None = None) -> bytes:
    """Record the refusal (with what was received, when it could be read) and the reply that says why."""
    if received is not None and offer is not None:
        _ledger(offer, federation, transport, "received", received)
    reply = message_encode(Message(kind="refused", meta={"reason": reason}))
    _ledger(offer, federation, transport, "refused", reply, kind=kind or "refused", reason=reason)
    return reply


def site_answer(*, federation: str, message: bytes, transport: str, signature: dict | None = None) -> bytes:
    """This site's reply to a federation request: an update, a hello, or a refusal that says why.

    `signature` (Celery): ``{"issued_at", "signature"}`` from `learners.federated.identity.request_sign`.
    Flower requests carry none: the SuperNode's TLS root certificate says which SuperLink it talks to.
    """
    federation = str(federation or "")
    offer = SiteOffer.objects.select_related("project").filter(federation=federation).first()
    if offer is None:
        return _refused(None, federation, transport, f"this site has not offered a project to federation "
                                                     f"{federation[:200]!r}")
    if offer.transport != transport:
        return _refused(offer, federation, transport, f"this site's offer is for {offer.transport}, not {transport}",
                        received=message)
    if transport == "celery":
        try:
            request_verify(offer.coordinator_key, federation=federation, site=offer.site_name, message=message,
                           **(signature or {"issued_at": 0.0, "signature": ""}))
        except (IdentityError, TypeError) as exc:
            return _refused(offer, federation, transport, str(exc), received=message)
    if not offer.enabled:
        return _refused(offer, federation, transport, "this site has switched its offer off", received=message)
    try:
        request = message_decode(message)
    except (WireError, ValueError, KeyError) as exc:
        return _refused(offer, federation, transport, f"not a federation message: {exc}")
    kind, round_ = request.kind, _round_of(request.meta)
    _ledger(offer, federation, transport, "received", message)
    if kind == "hello":
        reply = message_encode(Message(kind="hello", meta={"site": offer.site_name}))
    else:
        try:
            reply = _site_for(offer).handle(message)
        except SiteRefused as exc:  # raised while reading the rows for the site
            reply = message_encode(Message(kind="refused", meta={"reason": str(exc)}))
    decoded = message_decode(reply)
    if decoded.kind == "refused":
        _ledger(offer, federation, transport, "refused", reply, kind="refused",
                reason=str(decoded.meta.get("reason", "")), round_=round_)
    else:
        _ledger(offer, federation, transport, "sent", reply, round_=round_)
    return reply


def task_refused(*, name: str, task_id: str, transport: str = "celery") -> None:
    """A task other than the federated one reached a site worker: recorded; it was not run."""
    reason = f"task {name!r} is not the federated training task; a site worker runs nothing else"
    SiteLedgerEntry.objects.create(federation="", transport=transport, direction="refused", kind=name[:200],
                                   reason=f"{reason} (task id {task_id})")


def _holdout_keep(offer: SiteOffer, held: bool):
    threshold = int(offer.holdout_fraction * 2**32)

    def keep(item_id: int) -> bool:
        digest = hashlib.sha256(f"holdout:{offer.project_id}:{item_id}".encode()).digest()
        return (int.from_bytes(digest[:4], "big") < threshold) == held

    return keep


def _site_for(offer: SiteOffer) -> Site:
    """The offer's site, kept between messages (secure aggregation's keys live between a round's four)."""
    from learners.services.federated import site_rows

    project: Project = offer.project
    classes = sorted(project.labels.values_list("name", flat=True))
    key = (offer.pk, offer.updated_at, tuple(classes))
    site = _SITES.get(key)
    if site is None:
        holdout = _holdout_keep(offer, True) if offer.holdout_fraction > 0 else None
        site = Site(offer.site_name, rows=lambda: site_rows(project, classes, keep=_holdout_keep(offer, False)),
                    classes=classes, limits=SiteLimits(**offer.limits),
                    holdout=(lambda: site_rows(project, classes, keep=holdout)) if holdout else None)
        for old in [k for k in _SITES if k[0] == offer.pk]:
            del _SITES[old]
        _SITES[key] = site
    return site


# A site keeps its secure-aggregation keys between a round's four messages in the worker's memory, so a
# site's queue is served by one worker process (`--concurrency 1`); a restarted worker has lost them and
# drops out of that round, which the protocol tolerates.
_SITES: dict[tuple, Site] = {}


def celery_answer(*, federation: str, message: str, issued_at: float, signature: str) -> str:
    """`workbench.federated_local_train` at a site: base64 message in, base64 reply out."""
    reply = site_answer(federation=federation, message=base64.b64decode(message), transport="celery",
                        signature={"issued_at": issued_at, "signature": signature})
    return base64.b64encode(reply).decode("ascii")
