"""Who sent a request: the coordinator signs what it sends a site; the site checks against its offer.

On a broker that several parties can write to (a federation's shared Redis), a
queue name proves nothing: anyone who can publish can ask a site to train. So
the coordinator holds an Ed25519 key per federation, a site records the public
half in its offer, and each request carries a signature over the federation,
the site, the time it was issued and the message's SHA-256. A site refuses a
request whose signature does not verify or that was issued outside its window
(a replayed message from last week is refused; one within the window is
answered again with the same kind of reply the site already agreed to give).
"""
from __future__ import annotations

import hashlib
import time

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_CONTEXT = b"workbench-federation-request-v1"
# A request older than this (or this far in the future: clock skew) is refused.
WINDOW_SECONDS = 3600.0


class IdentityError(ValueError):
    """A request whose signature is missing, malformed, stale or not the coordinator's."""


def keypair_new() -> tuple[str, str]:
    """A fresh (private, public) Ed25519 key pair, both as 64 hex digits."""
    private = Ed25519PrivateKey.generate()
    return private.private_bytes_raw().hex(), private.public_key().public_bytes_raw().hex()


def public_key_check(public_hex: str) -> str:
    """The key, normalised; IdentityError if it is not 32 bytes of hex."""
    text = (public_hex or "").strip().lower()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise IdentityError("the coordinator's public key must be 64 hex digits") from None
    if len(raw) != 32:
        raise IdentityError(f"the coordinator's public key must be 32 bytes (64 hex digits), not {len(raw)}")
    return text


def _signed(federation: str, site: str, issued_at: float, message: bytes) -> bytes:
    return b"\x00".join([SIGNATURE_CONTEXT, federation.encode(), site.encode(), repr(float(issued_at)).encode(),
                         hashlib.sha256(message).digest()])


def request_sign(private_hex: str, *, federation: str, site: str, message: bytes,
                 issued_at: float | None = None) -> dict[str, str | float]:
    """The fields a request carries besides the message: issued_at and the signature (hex)."""
    at = time.time() if issued_at is None else float(issued_at)
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private_hex))
    return {"issued_at": at, "signature": key.sign(_signed(federation, site, at, message)).hex()}


def request_verify(public_hex: str, *, federation: str, site: str, message: bytes, issued_at: float,
                   signature: str, now: float | None = None) -> None:
    """Raise IdentityError unless the coordinator holding `public_hex` signed this request, recently."""
    now = time.time() if now is None else now
    try:
        at = float(issued_at)
        raw = bytes.fromhex(signature)
    except (TypeError, ValueError):
        raise IdentityError("the request carries no readable signature") from None
    if abs(now - at) > WINDOW_SECONDS:
        raise IdentityError(f"the request was issued {now - at:.0f} s ago; this site answers requests issued "
                            f"within {WINDOW_SECONDS:.0f} s")
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_check(public_hex)))
    try:
        key.verify(raw, _signed(federation, site, at, message))
    except InvalidSignature:
        raise IdentityError("the request is not signed by the coordinator this site's offer names") from None
