"""Secure aggregation: the coordinator learns the sum of the sites' vectors and nothing else.

Pairwise additive masking after Bonawitz et al. 2017, "Practical Secure
Aggregation for Privacy-Preserving Machine Learning" (CCS '17), in its
semi-honest form (an honest-but-curious server): rounds 0 AdvertiseKeys,
1 ShareKeys, 2 MaskedInputCollection and 4 Unmasking. Round 3, the consistency
check, only matters against a server that lies about who dropped out; here a
client refuses an unmasking request that names a peer both survivor and
dropout.

Each round every client u

* makes two X25519 key pairs, c_u to encrypt shares and s_u to agree masks, and
  a 32-byte self-mask seed b_u;
* Shamir-shares s_u^SK and b_u t-of-n among the clients; peer v's shares are
  AES-GCM-encrypted under HKDF(X25519(c_u^SK, c_v^PK)) and relayed by the server;
* sends y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv) mod 2^32,
  where s_uv = HKDF(X25519(s_u^SK, s_v^PK)) and x_u is its vector in fixed point.

The pairwise masks cancel in the sum over the clients that sent y. The
survivors then reveal, per peer, shares of b_v if v sent y, or of s_v^SK if v
shared keys but sent no y; the server rebuilds the self masks and the pairwise
masks the dropouts left behind, and subtracts them.

Choices
-------
PRG
    ChaCha20 keystream (``cryptography``), not numpy's PCG64: a mask hides a
    vector only while the PRG is unpredictable, and PCG64's state can be
    recovered from its output (Bouillaguet, Martinez, Sauvage 2020). Through
    OpenSSL it is also faster than numpy's generator.
Field
    Shamir shares live in GF(p), p = 2^521 - 1 (a Mersenne prime), so a 32-byte
    secret fits; a share travels as 66 big-endian bytes, client u's share is
    the polynomial at x = u + 1.
Fixed point
    x -> round(x * 2^scale_bits) in two's complement mod 2^32. With |x| <= clip,
    the sum of n clients decodes uniquely while n * ceil(clip * 2^scale_bits)
    <= 2^31 - 1; each client adds at most 2^-(scale_bits + 1) rounding error.
    Defaults: 16 scale bits, clip 16, so up to 2047 clients.
Wire sizes
    `message_nbytes`: raw bytes and array buffers, 4 bytes per client id, fixed
    field names free (a schema'd encoding). AES-GCM nonces are not sent: they
    are (sender, recipient), unique because the keys are fresh every round.
"""
from __future__ import annotations

import hashlib
import math
import secrets
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from learners.federated.updates import Arrays, Update, arrays_check_like, arrays_flatten, arrays_unflatten

if TYPE_CHECKING:
    from learners.federated.strategies.base import Strategy

PRIME = 2**521 - 1
SHARE_BYTES = 66
KEY_BYTES = 32
CLIENT_ID_BYTES = 4
DEFAULT_SCALE_BITS = 16
DEFAULT_CLIP = 16.0
PHASES = ("advertise_keys", "share_keys", "masked_input", "unmask")

_INT32_MAX = 2**31 - 1
_CHACHA_NONCE = bytes(16)  # every ChaCha20 key expands exactly one mask


class SecureAggregationError(Exception):
    """Base class of the secure-aggregation errors."""


class SecureAggregationConfigError(SecureAggregationError, ValueError):
    """Parameters that cannot work: a threshold out of range, a fixed-point range that can wrap."""


class SecureAggregationAborted(SecureAggregationError):
    """Too few clients are left to finish the round; its inputs are lost, nothing leaked."""


class SecureAggregationProtocolError(SecureAggregationError):
    """A message out of order, malformed, tampered with, or one a client must refuse to answer."""


class SecureAggregationUnsupported(SecureAggregationError, ValueError):
    """The aggregation rule needs the individual updates, which secure aggregation hides."""


# ---------------------------------------------------------------- fixed point

def max_scale_bits(n_clients: int, clip: float) -> int:
    """The most scale bits (at most 30) at which n clients' values in +-clip cannot wrap; -1 if none."""
    for bits in range(30, -1, -1):
        if n_clients * math.ceil(clip * 2**bits) <= _INT32_MAX:
            return bits
    return -1


def check_fixed_point(*, n_clients: int, scale_bits: int, clip: float) -> None:
    """Raise `SecureAggregationConfigError` if the sum of `n_clients` vectors in +-clip can wrap mod 2^32."""
    if isinstance(scale_bits, bool) or not isinstance(scale_bits, int) or not 0 <= scale_bits <= 30:
        raise SecureAggregationConfigError(f"scale_bits must be an int in 0..30, got {scale_bits!r}")
    if not (isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0):
        raise SecureAggregationConfigError(f"clip must be a finite number > 0, got {clip!r}")
    units = math.ceil(clip * 2**scale_bits)
    if n_clients * units > _INT32_MAX:
        fit = max_scale_bits(n_clients, clip)
        advice = f"use scale_bits <= {fit}" if fit >= 0 else f"lower clip to <= {_INT32_MAX / n_clients:g}"
        raise SecureAggregationConfigError(
            f"the 32-bit fixed-point sum of {n_clients} clients with values in +-{clip:g} at {scale_bits} scale bits "
            f"can wrap (n * clip * 2^scale = {n_clients * units} > 2^31 - 1): {advice}, or clip the values harder"
        )


def encode_fixed_point(vector: np.ndarray, *, scale_bits: int, clip: float, what: str = "vector") -> np.ndarray:
    """Floats in +-clip as uint32 fixed point (two's complement mod 2^32).

    Raises
    ------
    SecureAggregationConfigError
        A value is not finite or lies outside +-clip: encoding it would wrap the sum.
    """
    x = np.asarray(vector, dtype=np.float64)
    if x.ndim != 1:
        raise SecureAggregationConfigError(f"{what} must be one-dimensional, got shape {x.shape}")
    bad = np.flatnonzero(~np.isfinite(x) | (np.abs(x) > clip))
    if bad.size:
        i = int(bad[0])
        raise SecureAggregationConfigError(
            f"{what} has value {float(x[i])!r} at index {i} outside +-{clip:g} ({bad.size} such values): "
            "clip the update (DifferentialPrivacy.clip bounds its norm) or raise clip and lower scale_bits"
        )
    return (np.rint(x * 2.0**scale_bits).astype(np.int64) & 0xFFFFFFFF).astype(np.uint32)


def decode_fixed_point(total: np.ndarray, *, scale_bits: int) -> np.ndarray:
    """A uint32 fixed-point sum back to float64."""
    return np.ascontiguousarray(total, dtype=np.uint32).view(np.int32).astype(np.float64) / 2.0**scale_bits


# ------------------------------------------------------------- Shamir sharing

def shamir_split(
    secret: int, *, threshold: int, xs: Iterable[int], randbelow: Callable[[int], int] = secrets.randbelow
) -> dict[int, int]:
    """Shares of `secret` in GF(2^521 - 1), any `threshold` of which rebuild it.

    Parameters
    ----------
    secret : int
        In [0, PRIME).
    threshold : int
        Shares needed; the polynomial has degree threshold - 1.
    xs : iterable of int
        Distinct non-zero evaluation points, one per holder.
    randbelow : callable
        Source of the random coefficients (the OS CSPRNG by default).

    Returns
    -------
    dict of int to int
        x -> polynomial(x).
    """
    points = list(xs)
    if not 0 <= secret < PRIME:
        raise SecureAggregationConfigError("a Shamir secret must lie in [0, 2^521 - 1)")
    if not 1 <= threshold <= len(points):
        raise SecureAggregationConfigError(f"threshold {threshold} needs 1..{len(points)} for {len(points)} holders")
    if len({x % PRIME for x in points}) != len(points) or any(x % PRIME == 0 for x in points):
        raise SecureAggregationConfigError("Shamir evaluation points must be distinct and non-zero mod p")
    coefficients = [secret] + [randbelow(PRIME) for _ in range(threshold - 1)]
    shares = {}
    for x in points:
        y = 0
        for a in reversed(coefficients):
            y = (y * x + a) % PRIME
        shares[x] = y
    return shares


def lagrange_at_zero(xs: list[int]) -> list[int]:
    """Weights w_j with f(0) = sum w_j f(x_j) for any polynomial of degree < len(xs)."""
    weights = []
    for j, xj in enumerate(xs):
        numerator, denominator = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                numerator = numerator * xm % PRIME
                denominator = denominator * (xm - xj) % PRIME
        weights.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return weights


def shamir_combine(shares: Mapping[int, int]) -> int:
    """The polynomial's value at 0 from shares x -> y; with fewer than threshold shares, an unrelated value."""
    xs = list(shares)
    return sum(w * shares[x] for w, x in zip(lagrange_at_zero(xs), xs)) % PRIME


# ------------------------------------------------------------ key agreement

def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


def _pair(u: int, v: int) -> bytes:
    return struct.pack(">II", min(u, v), max(u, v))


def pairwise_mask_seed(private_key: X25519PrivateKey, peer_public: bytes, u: int, v: int) -> bytes:
    """s_uv: HKDF-SHA256 of X25519(s_u^SK, s_v^PK); the same bytes from either end."""
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return _hkdf(shared, b"secagg/pairwise-mask/" + _pair(u, v))


def expand_mask(seed: bytes, length: int) -> np.ndarray:
    """`length` uint32 words of ChaCha20 keystream under the 32-byte key `seed`."""
    encryptor = Cipher(algorithms.ChaCha20(seed, _CHACHA_NONCE), mode=None).encryptor()
    return np.frombuffer(encryptor.update(bytes(4 * length)), dtype="<u4").astype(np.uint32, copy=False)


def _share_cipher(private_key: X25519PrivateKey, peer_public: bytes, u: int, v: int) -> AESGCM:
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return AESGCM(_hkdf(shared, b"secagg/share-encryption/" + _pair(u, v)))


def _nonce_and_aad(sender: int, recipient: int) -> tuple[bytes, bytes]:
    # The key serves both directions of a pair, so the nonce is ordered (sender, recipient).
    ids = struct.pack(">II", sender, recipient)
    return ids + bytes(4), b"secagg/shares/" + ids


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def message_nbytes(message: Any) -> int:
    """Bytes a message takes on the wire (see the module docstring for what counts)."""
    if isinstance(message, (bytes, bytearray)):
        return len(message)
    if isinstance(message, np.ndarray):
        return int(message.nbytes)
    if isinstance(message, Mapping):
        return sum((CLIENT_ID_BYTES if isinstance(k, int) else 0) + message_nbytes(v) for k, v in message.items())
    if isinstance(message, (set, frozenset, list, tuple)):
        return sum(message_nbytes(item) for item in message)
    if isinstance(message, int):
        return CLIENT_ID_BYTES
    raise TypeError(f"cannot size a message part of type {type(message).__name__}")


def default_threshold(n_clients: int) -> int:
    """n - floor(n/3): the sum survives up to a third of the clients dropping out."""
    return n_clients - n_clients // 3


def check_threshold(threshold: int, n_clients: int) -> None:
    """Raise `SecureAggregationConfigError` unless n/2 < threshold <= n."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not n_clients / 2 < threshold <= n_clients:
        raise SecureAggregationConfigError(
            f"threshold {threshold!r} for {n_clients} clients must be an int in {n_clients // 2 + 1}..{n_clients}: "
            "at or below half, a server telling two halves different dropout stories could rebuild both secrets "
            f"of one client; the default n - n//3 = {default_threshold(n_clients)} survives a third dropping out"
        )


def _check_client_id(client_id: int) -> None:
    if isinstance(client_id, bool) or not isinstance(client_id, int) or not 0 <= client_id < 2**31:
        raise SecureAggregationConfigError(f"client ids must be ints in 0..2^31-1, got {client_id!r}")


class _Entropy:
    """Secret randomness: the OS CSPRNG, or with a seed a SHAKE-256 stream (reproducible tests only)."""

    def __init__(self, seed: int | None, client_id: int) -> None:
        self._prefix = None if seed is None else f"secagg-test-seed/{seed}/{client_id}/".encode()
        self._counter = 0

    def token(self, n: int) -> bytes:
        if self._prefix is None:
            return secrets.token_bytes(n)
        self._counter += 1
        return hashlib.shake_256(self._prefix + str(self._counter).encode()).digest(n)

    def randbelow(self, bound: int) -> int:
        if self._prefix is None:
            return secrets.randbelow(bound)
        bits = bound.bit_length()
        while True:
            value = int.from_bytes(self.token((bits + 7) // 8), "big") & ((1 << bits) - 1)
            if value < bound:
                return value

    def private_key(self) -> X25519PrivateKey:
        if self._prefix is None:
            return X25519PrivateKey.generate()
        return X25519PrivateKey.from_private_bytes(self.token(KEY_BYTES))


# ------------------------------------------------------------------ parties

class SecAggClient:
    """One site's side of one secure-aggregation round; make a fresh one every round.

    Call `advertise_keys`, `share_keys`, `masked_input` and `unmask` in that
    order, each with what the server sent for that phase.

    Parameters
    ----------
    client_id : int
        This client's id in 0..2^31-1, unique in the round.
    threshold : int
        Shares needed to rebuild a secret (the same on every client and the server).
    n_clients : int, optional
        Clients in the round; given, the threshold and fixed-point range are checked at once,
        otherwise against the key list in `share_keys`.
    scale_bits, clip : int, float
        Fixed-point encoding; see `check_fixed_point`.
    seed : int, optional
        Makes keys and masks reproducible. Tests only: a seeded client's secrets are guessable.
    """

    def __init__(
        self,
        client_id: int,
        *,
        threshold: int,
        n_clients: int | None = None,
        scale_bits: int = DEFAULT_SCALE_BITS,
        clip: float = DEFAULT_CLIP,
        seed: int | None = None,
    ) -> None:
        _check_client_id(client_id)
        check_fixed_point(n_clients=n_clients or 1, scale_bits=scale_bits, clip=clip)
        if n_clients is not None:
            check_threshold(threshold, n_clients)
        self.client_id = client_id
        self.threshold = threshold
        self.n_clients = n_clients
        self.scale_bits = scale_bits
        self.clip = clip
        self._entropy = _Entropy(seed, client_id)
        self._phase = "advertise_keys"
        self._public_keys: dict[int, dict[str, bytes]] = {}
        self._ciphers: dict[int, AESGCM] = {}
        self._shares_from: dict[int, tuple[bytes, bytes]] = {}  # holder's (s_SK share, b share) per owner
        self._mask_peers: frozenset[int] = frozenset()
        self._revealed: dict[int, str] = {}

    def _enter(self, phase: str, following: str) -> None:
        if self._phase != phase:
            raise SecureAggregationProtocolError(
                f"client {self.client_id} was asked for {phase} while expecting {self._phase}: "
                "phases run advertise_keys, share_keys, masked_input, unmask, once each per round"
            )
        self._phase = following

    def advertise_keys(self) -> dict[str, bytes]:
        """Round 0: the two public keys, {"c_pk": 32 bytes, "s_pk": 32 bytes}."""
        self._enter("advertise_keys", "share_keys")
        self._c_key = self._entropy.private_key()
        self._s_key = self._entropy.private_key()
        return {"c_pk": _public_bytes(self._c_key), "s_pk": _public_bytes(self._s_key)}

    def share_keys(self, public_keys: Mapping[int, Mapping[str, bytes]]) -> dict[int, bytes]:
        """Round 1: encrypted shares of s^SK and b for every other client in the server's key list.

        Returns
        -------
        dict of int to bytes
            Peer id -> AES-GCM ciphertext only that peer can open.
        """
        self._enter("share_keys", "masked_input")
        u = self.client_id
        own = {"c_pk": _public_bytes(self._c_key), "s_pk": _public_bytes(self._s_key)}
        if u not in public_keys or dict(public_keys[u]) != own:
            raise SecureAggregationProtocolError(f"the key list does not carry client {u}'s own keys: wrong round?")
        for v, keys in public_keys.items():
            _check_client_id(v)
            if set(keys) != {"c_pk", "s_pk"} or any(len(keys[k]) != KEY_BYTES for k in keys):
                raise SecureAggregationProtocolError(f"client {v}'s entry in the key list is malformed")
        for kind in ("c_pk", "s_pk"):
            if len({keys[kind] for keys in public_keys.values()}) != len(public_keys):
                raise SecureAggregationProtocolError(f"two clients in the key list share a {kind}: refusing the round")
        n = len(public_keys)
        if self.n_clients is None:
            check_threshold(self.threshold, n)
            check_fixed_point(n_clients=n, scale_bits=self.scale_bits, clip=self.clip)
        elif n > self.n_clients:
            raise SecureAggregationProtocolError(f"the key list has {n} clients, more than the {self.n_clients} agreed")
        if n < self.threshold:
            raise SecureAggregationAborted(f"only {n} clients advertised keys; threshold {self.threshold} needed")
        self._public_keys = {v: dict(keys) for v, keys in public_keys.items()}
        self._self_seed = self._entropy.token(KEY_BYTES)
        holders = sorted(public_keys)
        s_shares = shamir_split(
            int.from_bytes(self._s_key.private_bytes_raw(), "big"),
            threshold=self.threshold, xs=[v + 1 for v in holders], randbelow=self._entropy.randbelow,
        )
        b_shares = shamir_split(
            int.from_bytes(self._self_seed, "big"),
            threshold=self.threshold, xs=[v + 1 for v in holders], randbelow=self._entropy.randbelow,
        )
        ciphertexts = {}
        for v in holders:
            plaintext = s_shares[v + 1].to_bytes(SHARE_BYTES, "big") + b_shares[v + 1].to_bytes(SHARE_BYTES, "big")
            if v == u:
                self._shares_from[u] = (plaintext[:SHARE_BYTES], plaintext[SHARE_BYTES:])
                continue
            self._ciphers[v] = _share_cipher(self._c_key, self._public_keys[v]["c_pk"], u, v)
            nonce, aad = _nonce_and_aad(u, v)
            ciphertexts[v] = self._ciphers[v].encrypt(nonce, plaintext, aad)
        return ciphertexts

    def masked_input(self, vector: np.ndarray, received_ciphertexts: Mapping[int, bytes]) -> np.ndarray:
        """Round 2: the vector in fixed point plus the self mask and the pairwise masks, mod 2^32.

        Parameters
        ----------
        vector : ndarray
            1-D floats, every value within +-clip.
        received_ciphertexts : dict of int to bytes
            Sender -> ciphertext addressed to this client; the senders are the peers it masks with.

        Returns
        -------
        ndarray of uint32
        """
        self._enter("masked_input", "unmask")
        u = self.client_id
        senders = set(received_ciphertexts)
        unknown = (senders - set(self._public_keys)) | (senders & {u})
        if unknown:
            raise SecureAggregationProtocolError(f"client {u} got shares from {sorted(unknown)}, not in its key list")
        if len(senders) + 1 < self.threshold:
            raise SecureAggregationAborted(
                f"only {len(senders) + 1} clients shared keys; threshold {self.threshold} needed"
            )
        for v in sorted(senders):
            nonce, aad = _nonce_and_aad(v, u)
            try:
                plaintext = self._ciphers[v].decrypt(nonce, received_ciphertexts[v], aad)
            except InvalidTag:
                raise SecureAggregationProtocolError(
                    f"client {u} cannot decrypt the shares from client {v}: altered, or addressed to another client"
                ) from None
            self._shares_from[v] = (plaintext[:SHARE_BYTES], plaintext[SHARE_BYTES:])
        masked = encode_fixed_point(vector, scale_bits=self.scale_bits, clip=self.clip, what=f"client {u}'s vector")
        masked += expand_mask(self._self_seed, masked.size)
        for v in sorted(senders):
            mask = expand_mask(pairwise_mask_seed(self._s_key, self._public_keys[v]["s_pk"], u, v), masked.size)
            if v > u:
                masked += mask
            else:
                masked -= mask
        self._mask_peers = frozenset(senders | {u})
        return masked

    def unmask(self, survivors: Iterable[int], dropped: Iterable[int]) -> dict[str, dict[int, bytes]]:
        """Round 4: shares of b for the survivors and of s^SK for the dropped, never both for one peer.

        Parameters
        ----------
        survivors : set of int
            Clients whose masked input the server holds (this one among them).
        dropped : set of int
            Clients that shared keys but sent no masked input.

        Returns
        -------
        dict
            {"b": {survivor: share}, "s_sk": {dropped: share}}, shares as 66 bytes.
        """
        self._enter("unmask", "done")
        u = self.client_id
        survivors, dropped = set(survivors), set(dropped)
        if survivors & dropped:
            raise SecureAggregationProtocolError(
                f"client {u} refuses to unmask: {sorted(survivors & dropped)} listed as both survivor and dropped, "
                "and both their shares would reveal their input"
            )
        if u not in survivors or survivors | dropped != self._mask_peers:
            raise SecureAggregationProtocolError(
                f"client {u} refuses to unmask: survivors {sorted(survivors)} and dropped {sorted(dropped)} do not "
                f"split the clients it masked with, {sorted(self._mask_peers)}"
            )
        if len(survivors) < self.threshold:
            raise SecureAggregationAborted(f"only {len(survivors)} survivors; threshold {self.threshold} needed")
        reveal: dict[str, dict[int, bytes]] = {"b": {}, "s_sk": {}}
        for kind, owners in (("b", survivors), ("s_sk", dropped)):
            for v in sorted(owners):
                # The invariant the protocol's privacy rests on: one kind of share per peer, ever.
                if self._revealed.setdefault(v, kind) != kind:
                    raise SecureAggregationProtocolError(f"client {u} would reveal both shares of client {v}")
                reveal[kind][v] = self._shares_from[v][0 if kind == "s_sk" else 1]
        return reveal


class SecAggServer:
    """The coordinator's side of one round: relays keys and ciphertexts, then unmasks the sum.

    Per phase: `receive_keys` then `broadcast_keys`; `receive_shares` then
    `route_shares`; `receive_masked_input` then `unmask_request`;
    `receive_unmask` then `result`. A phase closes when its second method is
    called; clients that have not answered by then count as dropped.

    Parameters
    ----------
    client_ids : iterable of int
        The clients invited to the round.
    threshold : int, optional
        Shares needed to rebuild a secret; default n - floor(n/3).
    vector_length : int
        Length of every client's vector.
    scale_bits, clip : int, float
        Fixed-point encoding, as on the clients.

    Attributes
    ----------
    bytes_received, bytes_sent : dict of int to dict of str to int
        Per client, per phase (`PHASES`), bytes the server got from and sent to it.
    """

    def __init__(
        self,
        client_ids: Iterable[int],
        *,
        threshold: int | None = None,
        vector_length: int,
        scale_bits: int = DEFAULT_SCALE_BITS,
        clip: float = DEFAULT_CLIP,
    ) -> None:
        self.client_ids = tuple(sorted(set(client_ids)))
        for client_id in self.client_ids:
            _check_client_id(client_id)
        n = len(self.client_ids)
        if n == 0:
            raise SecureAggregationConfigError("a secure-aggregation round needs at least one client")
        self.threshold = default_threshold(n) if threshold is None else threshold
        check_threshold(self.threshold, n)
        check_fixed_point(n_clients=n, scale_bits=scale_bits, clip=clip)
        if isinstance(vector_length, bool) or not isinstance(vector_length, int) or vector_length < 1:
            raise SecureAggregationConfigError(f"vector_length must be an int >= 1, got {vector_length!r}")
        self.vector_length = vector_length
        self.scale_bits = scale_bits
        self.clip = clip
        self.bytes_received = {c: dict.fromkeys(PHASES, 0) for c in self.client_ids}
        self.bytes_sent = {c: dict.fromkeys(PHASES, 0) for c in self.client_ids}
        self._phase = "advertise_keys"
        self._cohort: frozenset[int] = frozenset(self.client_ids)
        self._keys: dict[int, dict[str, bytes]] = {}
        self._ciphertexts: dict[int, dict[int, bytes]] = {}
        self._masked: dict[int, np.ndarray] = {}
        self._reveals: dict[int, Mapping[str, Mapping[int, bytes]]] = {}
        self._survivors: frozenset[int] = frozenset()
        self._dropped: frozenset[int] = frozenset()
        self._result: np.ndarray | None = None

    @property
    def survivors(self) -> frozenset[int]:
        """Clients whose masked input is in the sum (known once `unmask_request` ran)."""
        return self._survivors

    @property
    def dropped(self) -> frozenset[int]:
        """Clients that shared keys but sent no masked input."""
        return self._dropped

    def _accept(self, phase: str, client_id: int, message: Any, store: Mapping[int, Any]) -> None:
        if self._phase != phase:
            raise SecureAggregationProtocolError(
                f"client {client_id}'s {phase} message arrived while the server is at {self._phase}: "
                "late (the client counts as dropped) or out of order"
            )
        if client_id not in self._cohort:
            raise SecureAggregationProtocolError(f"client {client_id} is not in this round's {phase} cohort")
        if client_id in store:
            raise SecureAggregationProtocolError(f"client {client_id} sent its {phase} message twice")
        self.bytes_received[client_id][phase] += message_nbytes(message)

    def _close(self, phase: str, answered: Mapping[int, Any], what: str) -> frozenset[int]:
        if self._phase != phase:
            raise SecureAggregationProtocolError(f"cannot close {phase}: the server is at {self._phase}")
        if len(answered) < self.threshold:
            raise SecureAggregationAborted(
                f"only {len(answered)} of {len(self._cohort)} clients {what}; threshold {self.threshold} "
                f"needed (of {len(self.client_ids)} invited): the round's inputs are lost, nothing leaked"
            )
        self._phase = PHASES[PHASES.index(phase) + 1] if phase != "unmask" else "done"
        return frozenset(answered)

    def _send(self, phase: str, recipients: Iterable[int], message_for: Callable[[int], Any]) -> None:
        for client_id in recipients:
            self.bytes_sent[client_id][phase] += message_nbytes(message_for(client_id))

    def receive_keys(self, client_id: int, message: Mapping[str, bytes]) -> None:
        """Round 0: one client's {"c_pk", "s_pk"}."""
        self._accept("advertise_keys", client_id, message, self._keys)
        if set(message) != {"c_pk", "s_pk"} or any(len(message[k]) != KEY_BYTES for k in message):
            raise SecureAggregationProtocolError(f"client {client_id}'s keys are not two 32-byte X25519 keys")
        self._keys[client_id] = dict(message)

    def broadcast_keys(self) -> dict[int, dict[str, bytes]]:
        """Close round 0: the key list every advertising client gets."""
        self._cohort = self._close("advertise_keys", self._keys, "advertised keys")
        keys = {c: self._keys[c] for c in sorted(self._cohort)}
        self._send("advertise_keys", self._cohort, lambda c: keys)
        return keys

    def receive_shares(self, client_id: int, ciphertexts: Mapping[int, bytes]) -> None:
        """Round 1: one client's ciphertexts, recipient -> bytes."""
        self._accept("share_keys", client_id, ciphertexts, self._ciphertexts)
        expected = self._cohort - {client_id}
        if set(ciphertexts) != expected:
            raise SecureAggregationProtocolError(
                f"client {client_id} sent shares for {sorted(ciphertexts)}, expected {sorted(expected)}"
            )
        self._ciphertexts[client_id] = dict(ciphertexts)

    def route_shares(self) -> dict[int, dict[int, bytes]]:
        """Close round 1: per client that shared, the ciphertexts addressed to it by the others that shared."""
        self._cohort = self._close("share_keys", self._ciphertexts, "shared keys")
        routed = {v: {u: self._ciphertexts[u][v] for u in sorted(self._cohort) if u != v} for v in self._cohort}
        self._send("share_keys", self._cohort, routed.__getitem__)
        return routed

    def receive_masked_input(self, client_id: int, masked: np.ndarray) -> None:
        """Round 2: one client's masked uint32 vector."""
        self._accept("masked_input", client_id, masked, self._masked)
        masked = np.asarray(masked)
        if masked.dtype != np.uint32 or masked.shape != (self.vector_length,):
            raise SecureAggregationProtocolError(
                f"client {client_id} sent a {masked.dtype} array of shape {masked.shape}, "
                f"expected uint32 of shape ({self.vector_length},)"
            )
        self._masked[client_id] = masked.copy()

    def unmask_request(self) -> tuple[frozenset[int], frozenset[int]]:
        """Close round 2: (survivors, dropped), sent to every survivor."""
        shared = self._cohort
        self._survivors = self._close("masked_input", self._masked, "sent masked input")
        self._dropped = shared - self._survivors
        self._cohort = self._survivors
        request = (self._survivors, self._dropped)
        self._send("unmask", self._survivors, lambda c: request)
        return request

    def receive_unmask(self, client_id: int, reveal: Mapping[str, Mapping[int, bytes]]) -> None:
        """Round 4: one survivor's revealed shares."""
        self._accept("unmask", client_id, reveal, self._reveals)
        if (
            set(reveal) != {"b", "s_sk"}
            or set(reveal["b"]) != self._survivors
            or set(reveal["s_sk"]) != self._dropped
            or any(len(share) != SHARE_BYTES for kind in reveal.values() for share in kind.values())
        ):
            raise SecureAggregationProtocolError(
                f"client {client_id}'s unmasking answer is not b shares for the survivors and s_sk shares "
                "for the dropped, 66 bytes each"
            )
        self._reveals[client_id] = reveal

    def result(self) -> np.ndarray:
        """Close round 4: the float64 sum of the survivors' vectors."""
        if self._result is not None:
            return self._result
        holders = sorted(self._close("unmask", self._reveals, "answered the unmasking request"))[: self.threshold]
        weights = lagrange_at_zero([h + 1 for h in holders])

        def rebuild(kind: str, owner: int) -> bytes:
            value = sum(w * int.from_bytes(self._reveals[h][kind][owner], "big") for w, h in zip(weights, holders))
            value %= PRIME
            if value >= 2 ** (8 * KEY_BYTES):
                raise SecureAggregationProtocolError(f"the {kind} shares of client {owner} are inconsistent")
            return value.to_bytes(KEY_BYTES, "big")

        total = np.zeros(self.vector_length, dtype=np.uint32)
        for u in sorted(self._survivors):
            total += self._masked[u]
            total -= expand_mask(rebuild("b", u), self.vector_length)
        for v in sorted(self._dropped):
            s_key = X25519PrivateKey.from_private_bytes(rebuild("s_sk", v))
            if _public_bytes(s_key) != self._keys[v]["s_pk"]:
                raise SecureAggregationProtocolError(f"the s_sk shares of client {v} do not rebuild its public key")
            for u in sorted(self._survivors):
                # u added this mask if v > u and subtracted it otherwise.
                mask = expand_mask(pairwise_mask_seed(s_key, self._keys[u]["s_pk"], u, v), self.vector_length)
                if v > u:
                    total -= mask
                else:
                    total += mask
        self._result = decode_fixed_point(total, scale_bits=self.scale_bits)
        return self._result


# ------------------------------------------------------------------ drivers

@dataclass(frozen=True)
class SecureSumResult:
    """What `secure_sum` returns.

    Attributes
    ----------
    sum : ndarray of float64
        The sum of the survivors' vectors, within n * 2^-(scale_bits+1) per coordinate.
    survivors : frozenset of int
        Clients whose input is in the sum (including any that dropped out after sending it).
    dropped : frozenset of int
        Clients whose input is not.
    bytes_per_client_by_phase : dict of int to dict of str to int
        Per client, per phase, bytes it sent plus bytes it received.
    plain_bytes_per_client : int
        Bytes of the vector sent once as plain float32, the baseline.
    upload_bytes_per_client : dict of int to int
        Per client, bytes it sent over all phases.
    """

    sum: np.ndarray
    survivors: frozenset[int]
    dropped: frozenset[int]
    bytes_per_client_by_phase: dict[int, dict[str, int]]
    plain_bytes_per_client: int
    upload_bytes_per_client: dict[int, int]

    @property
    def overhead(self) -> float:
        """Mean bytes a client sent and received over the protocol, per byte of its plain float32 vector."""
        totals = [sum(phases.values()) for phases in self.bytes_per_client_by_phase.values()]
        return float(np.mean(totals)) / self.plain_bytes_per_client

    @property
    def upload_overhead(self) -> float:
        """Mean bytes a client sent, per byte of its plain float32 vector."""
        return float(np.mean(list(self.upload_bytes_per_client.values()))) / self.plain_bytes_per_client


def secure_sum(
    vectors: Mapping[int, np.ndarray],
    *,
    drop_before_input: Iterable[int] = (),
    drop_after_input: Iterable[int] = (),
    threshold: int | None = None,
    scale_bits: int = DEFAULT_SCALE_BITS,
    clip: float = DEFAULT_CLIP,
    seed: int | None = None,
) -> SecureSumResult:
    """Run a whole round in process and measure its traffic.

    Parameters
    ----------
    vectors : dict of int to ndarray
        Client id -> 1-D float vector, all the same length, values within +-clip.
    drop_before_input : iterable of int
        Clients that share keys, then vanish before sending their masked input.
    drop_after_input : iterable of int
        Clients that send their masked input, then never answer the unmasking request.
    threshold : int, optional
        Default n - floor(n/3).
    scale_bits, clip : int, float
        Fixed-point encoding; see `check_fixed_point`.
    seed : int, optional
        Reproducible keys and masks, for tests only.

    Returns
    -------
    SecureSumResult

    Raises
    ------
    SecureAggregationAborted
        Fewer than `threshold` clients are left at some phase.
    """
    ids = sorted(vectors)
    before, after = set(drop_before_input), set(drop_after_input)
    if not before | after <= set(ids) or before & after:
        raise SecureAggregationConfigError(
            f"dropouts {sorted(before)} before and {sorted(after)} after input must be distinct clients of {ids}"
        )
    lengths = {np.size(vector) for vector in vectors.values()}
    if len(lengths) != 1:
        raise SecureAggregationConfigError(f"all vectors must have one length, got lengths {sorted(lengths)}")
    length = lengths.pop()
    server = SecAggServer(ids, threshold=threshold, vector_length=length, scale_bits=scale_bits, clip=clip)
    clients = {
        c: SecAggClient(
            c, threshold=server.threshold, n_clients=len(ids), scale_bits=scale_bits, clip=clip, seed=seed
        )
        for c in ids
    }
    for c in ids:
        server.receive_keys(c, clients[c].advertise_keys())
    keys = server.broadcast_keys()
    for c in keys:
        server.receive_shares(c, clients[c].share_keys(keys))
    routed = server.route_shares()
    for c in sorted(set(routed) - before):
        server.receive_masked_input(c, clients[c].masked_input(np.ravel(vectors[c]), routed[c]))
    survivors, dropped = server.unmask_request()
    for c in sorted(survivors - after):
        server.receive_unmask(c, clients[c].unmask(survivors, dropped))
    total = server.result()
    return SecureSumResult(
        sum=total,
        survivors=survivors,
        dropped=frozenset(ids) - survivors,
        bytes_per_client_by_phase={
            c: {phase: server.bytes_received[c][phase] + server.bytes_sent[c][phase] for phase in PHASES}
            for c in ids
        },
        plain_bytes_per_client=4 * length,
        upload_bytes_per_client={c: sum(server.bytes_received[c].values()) for c in ids},
    )


def check_strategy(strategy: Strategy) -> None:
    """Raise `SecureAggregationUnsupported` unless the strategy combines by example-weighted mean."""
    if not getattr(strategy, "weighted_mean", False):
        name = getattr(strategy, "name", type(strategy).__name__)
        raise SecureAggregationUnsupported(
            f"strategy {name!r} is not an example-weighted mean (weighted_mean=False), so it cannot run under "
            "secure aggregation: robust rules (median, trimmed mean, Krum) need every site's update in the clear, "
            "which secure aggregation exists to prevent. Use a weighted-mean strategy (FedAvg, FedProx, FedAdam) "
            "or turn secure aggregation off"
        )


def weighted_vector(update: Update) -> np.ndarray:
    """concat(n * flatten(delta), [n]): summed over sites, the numerator and denominator of FedAvg."""
    n = update.num_examples
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SecureAggregationConfigError(f"update from {update.site or 'a site'} has num_examples {n!r}, need >= 1")
    return np.concatenate([arrays_flatten(update.arrays).astype(np.float64) * n, [float(n)]])


def secure_fedavg_change(
    updates: Iterable[Update],
    like: Mapping[str, np.ndarray],
    *,
    strategy: Strategy | None = None,
    clip: float | None = None,
    scale_bits: int | None = None,
    **kwargs: Any,
) -> tuple[Arrays, SecureSumResult]:
    """FedAvg's change, sum(n_i delta_i) / sum(n_i) over the survivors, computed under secure aggregation.

    Parameters
    ----------
    updates : iterable of Update
        One per site; site i takes client id i.
    like : dict of str to ndarray
        The model's arrays, for names and shapes.
    strategy : Strategy, optional
        Checked with `check_strategy`.
    clip, scale_bits : float, int, optional
        Fixed-point range of the weighted vectors. Left out, clip is the power of two above the largest
        |n_i delta_i| or n_i, and scale_bits the most that fits. That reads the inputs, which only an
        in-process run can: a deployment fixes the range in advance, as a range read from the data is
        itself information about it.
    **kwargs
        Passed to `secure_sum` (dropouts, threshold, seed).

    Returns
    -------
    (dict of str to ndarray, SecureSumResult)
    """
    if strategy is not None:
        check_strategy(strategy)
    updates = list(updates)
    if not updates:
        raise SecureAggregationConfigError("no updates to aggregate")
    for i, update in enumerate(updates):
        arrays_check_like(like, update.arrays, what=f"update from {update.site or f'site {i}'}")
    vectors = {i: weighted_vector(update) for i, update in enumerate(updates)}
    if clip is None:
        peak = max(float(np.max(np.abs(vector))) for vector in vectors.values())
        clip = 2.0 ** math.ceil(math.log2(peak))
    if scale_bits is None:
        scale_bits = max_scale_bits(len(vectors), clip)
        if scale_bits < 0:
            raise SecureAggregationConfigError(
                f"weighted values up to {clip:g} from {len(vectors)} sites overflow 32-bit fixed point even at "
                "0 scale bits: clip the updates (DifferentialPrivacy.clip sets num_examples to 1)"
            )
    result = secure_sum(vectors, clip=clip, scale_bits=scale_bits, **kwargs)
    total_examples = float(result.sum[-1])
    change = arrays_unflatten((result.sum[:-1] / total_examples).astype(np.float32), like)
    return change, result
