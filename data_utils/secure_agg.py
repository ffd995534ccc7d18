"""Secure aggregation (Bonawitz et al. 2017, "Practical Secure Aggregation for Privacy-Preserving
Machine Learning"), simulated in one process so a learner can see every step (notebook 06).

The idea: the server must learn the *sum* of the clients' updates and nothing else. Each client
turns its update into integers modulo ``M = 2**k`` (:class:`Quantizer`) and adds masks:

- a **pairwise mask** for every other client ``v``: a pseudo-random vector expanded from a seed
  that only ``u`` and ``v`` know (agreed by Diffie-Hellman: ``s_uv = g**(a_u a_v) mod p``);
  the client with the smaller id adds it, the other subtracts it, so it cancels in the sum;
- a **self mask** from a seed ``b_u`` of its own (the "double masking" of the paper).

One masked vector is uniformly random modulo ``M``: alone it tells the server nothing. Every
client also splits ``a_u`` and ``b_u`` into Shamir shares (any ``threshold`` of them rebuild
the secret, fewer reveal nothing) and gives one share of each to every other client. When all
masked vectors are in, the survivors hand the server the shares of ``b_u`` of each client that
*sent* and of ``a_u`` of each client that *dropped out after the masks were agreed*; the server
rebuilds those secrets, removes the self masks and the dropped clients' leftover pairwise masks,
and gets the exact sum of the survivors' integers. No client reveals both secrets of one client.

This is a teaching simulation, not cryptography: the Diffie-Hellman group is the toy group of
integers modulo the Mersenne prime ``2**127 - 1`` (discrete logarithms there are far easier than
in the elliptic curves real systems use), all parties live in one process, and the masks come
from NumPy's PCG64 generator, not a cryptographic PRG. The arithmetic (quantization, cancelling
masks, recovery after dropouts) is the real protocol's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from .aggregation import check_weight_lists
from .validate import check_int, check_positive, is_int

PRIME = 2**127 - 1  # Mersenne prime: Shamir's field and the toy Diffie-Hellman group
GENERATOR = 3
MIN_MODULUS_BITS, MAX_MODULUS_BITS = 2, 63


# ---- integers modulo 2**k -------------------------------------------------------------------------
def check_modulus_bits(bits) -> int:
    """The exponent ``k`` of the modulus ``2**k``: an integer between 2 and 63."""
    return check_int("modulus_bits", bits, low=MIN_MODULUS_BITS, high=MAX_MODULUS_BITS)


def _mask_of(bits: int) -> np.uint64:
    return np.uint64((1 << bits) - 1)


def check_vector(vector, modulus_bits: int, name: str = "vector") -> np.ndarray:
    """A 1-D array of integers in ``[0, 2**modulus_bits)``, as ``uint64``."""
    bits = check_modulus_bits(modulus_bits)
    v = np.asarray(vector)
    if v.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {v.shape}")
    if v.size and not np.issubdtype(v.dtype, np.integer):
        raise ValueError(f"{name} must hold integers modulo 2**{bits}, got dtype {v.dtype}")
    if v.size and (v.min() < 0 or np.any(v.astype(np.uint64) > _mask_of(bits))):
        raise ValueError(f"{name} must hold integers in [0, 2**{bits}), got values from "
                         f"{v.min()} to {v.max()}")
    return v.astype(np.uint64)


def add_mod(a: np.ndarray, b: np.ndarray, modulus_bits: int) -> np.ndarray:
    """``(a + b) mod 2**modulus_bits`` for ``uint64`` arrays (exact: uint64 wraps mod 2**64)."""
    return (a + b) & _mask_of(modulus_bits)


def sub_mod(a: np.ndarray, b: np.ndarray, modulus_bits: int) -> np.ndarray:
    """``(a - b) mod 2**modulus_bits`` for ``uint64`` arrays."""
    return (a - b) & _mask_of(modulus_bits)


def to_signed(vector: np.ndarray, modulus_bits: int) -> np.ndarray:
    """Read integers modulo ``2**k`` as signed numbers in ``[-2**(k-1), 2**(k-1))`` (int64)."""
    bits = check_modulus_bits(modulus_bits)
    v = np.asarray(vector, dtype=np.uint64)
    half = np.uint64(1 << (bits - 1))
    negated = (np.uint64(0) - v) & _mask_of(bits)  # 2**k - v, at most 2**62: fits in int64
    return np.where(v >= half, -negated.astype(np.int64), v.astype(np.int64))


def flatten(weights: Sequence[np.ndarray]) -> tuple[np.ndarray, list[tuple]]:
    """All layers of one model's weights (or update) as one float64 vector, and their shapes."""
    arrays = [np.asarray(w, dtype=np.float64) for w in weights]
    if not arrays:
        raise ValueError("weights must hold at least one layer, got an empty list")
    return np.concatenate([a.ravel() for a in arrays]), [a.shape for a in arrays]


def unflatten(vector: np.ndarray, shapes: Sequence[tuple]) -> list[np.ndarray]:
    """The inverse of :func:`flatten`."""
    sizes = [int(np.prod(s)) for s in shapes]
    if len(vector) != sum(sizes):
        raise ValueError(f"vector has {len(vector)} values, the shapes {list(shapes)} need {sum(sizes)}")
    parts = np.split(np.asarray(vector), np.cumsum(sizes)[:-1])
    return [p.reshape(s) for p, s in zip(parts, shapes)]


@dataclass(frozen=True)
class Quantizer:
    """Map real values to integers modulo ``2**modulus_bits`` and back.

    A value is clipped to ``[-clip, clip]`` and rounded to the nearest multiple of
    ``step = clip / (2**(value_bits-1) - 1)``; negative integers wrap around modulo ``2**k``
    (two's complement). Sums stay exact as long as they fit: ``max_summands`` values of full
    size can be added before ``2**(k-1)`` overflows, and :meth:`check_summands` says so."""

    clip: float
    value_bits: int = 16
    modulus_bits: int = 32

    def __post_init__(self):
        check_modulus_bits(self.modulus_bits)
        if check_int("value_bits", self.value_bits, low=2) >= self.modulus_bits:
            raise ValueError(f"value_bits must be less than modulus_bits ({self.modulus_bits}), "
                             f"got {self.value_bits!r}")
        check_positive("clip", self.clip)

    @property
    def levels(self) -> int:
        """The largest integer a single value maps to."""
        return (1 << (self.value_bits - 1)) - 1

    @property
    def step(self) -> float:
        """The quantization step: rounding moves a value by at most step / 2."""
        return float(self.clip) / self.levels

    @property
    def max_summands(self) -> int:
        """How many full-size values can be summed without leaving ``(-2**(k-1), 2**(k-1))``."""
        return ((1 << (self.modulus_bits - 1)) - 1) // self.levels

    def check_summands(self, n: int) -> None:
        """A ValueError if ``n`` full-size values could overflow the modulus when summed."""
        if check_int("n", n, low=0) > self.max_summands:
            raise ValueError(
                f"{n} clients would overflow the modulus 2**{self.modulus_bits}: with value_bits="
                f"{self.value_bits} at most {self.max_summands} values can be summed exactly; "
                "raise modulus_bits or lower value_bits")

    def encode(self, values) -> np.ndarray:
        """Real values (any shape) -> flat ``uint64`` integers modulo ``2**modulus_bits``."""
        x = np.asarray(values, dtype=np.float64).ravel()
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot quantize NaN or infinite values")
        q = np.rint(np.clip(x, -self.clip, self.clip) / self.step).astype(np.int64)
        return q.astype(np.uint64) & _mask_of(self.modulus_bits)

    def decode(self, vector) -> np.ndarray:
        """Integers modulo ``2**k`` (one encoded vector, or a sum of several) -> real values."""
        v = check_vector(vector, self.modulus_bits)
        return to_signed(v, self.modulus_bits).astype(np.float64) * self.step

    def clipped_fraction(self, values) -> float:
        """The fraction of ``values`` that :meth:`encode` clips."""
        x = np.abs(np.asarray(values, dtype=np.float64))
        return float(np.mean(x > self.clip)) if x.size else 0.0


# ---- Shamir secret sharing over GF(PRIME) ---------------------------------------------------------
def _random_below(rng: np.random.Generator, bound: int) -> int:
    """A uniform random integer in [0, bound), for bound up to 2**127."""
    nbytes = (bound.bit_length() + 7) // 8 + 8  # 64 extra bits: the modulo bias is negligible
    return int.from_bytes(rng.bytes(nbytes), "big") % bound


def shamir_share(secret: int, num_shares: int, threshold: int,
                 rng: np.random.Generator) -> list[tuple[int, int]]:
    """Split ``secret`` (0 <= secret < PRIME) into ``num_shares`` points ``(x, f(x))`` of a random
    polynomial ``f`` of degree ``threshold - 1`` with ``f(0) = secret``: any ``threshold`` shares
    rebuild it, fewer say nothing about it."""
    if not is_int(secret) or not 0 <= secret < PRIME:
        raise ValueError(f"secret must be an integer in [0, 2**127 - 1), got {secret!r}")
    num_shares = check_int("num_shares", num_shares, low=1)
    if check_int("threshold", threshold, low=1) > num_shares:
        raise ValueError(f"threshold must be at most num_shares ({num_shares}), got {threshold}")
    coefficients = [int(secret)] + [_random_below(rng, PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, num_shares + 1):
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares.append((x, y))
    return shares


def shamir_reconstruct(shares: Iterable[tuple[int, int]]) -> int:
    """The secret ``f(0)`` from shares ``(x, f(x))`` by Lagrange interpolation. With fewer shares
    than the threshold the result is a meaningless number, not an error: that is the point."""
    shares = list(shares)
    xs = [x for x, _ in shares]
    if not shares or len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError(f"shares must be at least one (x, y) pair, with distinct x in "
                         f"[1, 2**127 - 1), got x values {xs}")
    secret = 0
    for i, (xi, yi) in enumerate(shares):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    return secret


def prg(seed: int, length: int, modulus_bits: int) -> np.ndarray:
    """``length`` pseudo-random integers modulo ``2**modulus_bits`` expanded from ``seed``."""
    bits = np.random.PCG64(int(seed)).random_raw(int(length))
    return np.asarray(bits, dtype=np.uint64) & _mask_of(modulus_bits)


# ---- the protocol ------------------------------------------------------------------------------
class SecureAggregation:
    """One run of the protocol among clients ``0 .. num_clients-1`` on vectors of ``length``
    integers modulo ``2**modulus_bits``.

    Setup (done in the constructor, before anyone sends data): each client ``u`` draws a
    Diffie-Hellman secret ``a_u`` and publishes ``g**a_u mod p``; draws a self-mask seed
    ``b_u``; and gives every client one Shamir share of ``a_u`` and of ``b_u`` (threshold
    ``threshold``, by default a majority). Then :meth:`masked_input` is what client ``u``
    sends, and :meth:`unmask_sum` is the server's last step, with the survivors' help.

    >>> import numpy as np
    >>> protocol = SecureAggregation(num_clients=3, length=2, modulus_bits=8, seed=0)
    >>> vectors = [np.array([1, 2]), np.array([10, 20]), np.array([100, 0])]
    >>> masked = {u: protocol.masked_input(u, v) for u, v in enumerate(vectors)}
    >>> any(np.array_equal(masked[u], vectors[u]) for u in masked)   # each one looks random
    False
    >>> protocol.unmask_sum(masked).tolist()                           # the sum is exact
    [111, 22]
    >>> del masked[2]                                                  # client 2 drops out
    >>> protocol.unmask_sum(masked).tolist()                           # still the survivors' sum
    [11, 22]
    """

    def __init__(self, num_clients: int, length: int, modulus_bits: int = 32,
                 threshold: int | None = None, seed: int = 0):
        self.n = check_int("num_clients", num_clients, low=2)  # secure aggregation needs 2
        self.length = check_int("length", length, low=1)
        self.bits = check_modulus_bits(modulus_bits)
        threshold = self.n // 2 + 1 if threshold is None else check_int("threshold", threshold, low=1)
        if threshold > self.n:
            raise ValueError(f"threshold must be at most num_clients ({self.n}), got {threshold}")
        self.threshold = threshold
        rng = np.random.default_rng([check_int("seed", seed, low=0), 8, self.n])
        self._dh_secret = [2 + _random_below(rng, PRIME - 3) for _ in range(self.n)]
        self._self_seed = [_random_below(rng, PRIME) for _ in range(self.n)]
        self.public_keys = [pow(GENERATOR, a, PRIME) for a in self._dh_secret]
        # held[v][u] = (share of a_u, share of b_u) that client v holds for client u
        self._held = [[None] * self.n for _ in range(self.n)]
        for u in range(self.n):
            a_shares = shamir_share(self._dh_secret[u], self.n, self.threshold, rng)
            b_shares = shamir_share(self._self_seed[u], self.n, self.threshold, rng)
            for v in range(self.n):
                self._held[v][u] = (a_shares[v], b_shares[v])

    # -- what the clients compute --------------------------------------------------------------
    def _check_client(self, u) -> int:
        return check_int("client id", u, low=0, high=self.n - 1)

    def pair_seed(self, u: int, v: int) -> int:
        """The seed ``u`` and ``v`` agree on: ``(g**a_v)**a_u = (g**a_u)**a_v mod p``; computed
        by ``u`` from its secret and ``v``'s public key."""
        u, v = self._check_client(u), self._check_client(v)
        if u == v:
            raise ValueError(f"v must differ from u (a client has no pairwise mask with itself), "
                             f"got u = v = {u}")
        return pow(self.public_keys[v], self._dh_secret[u], PRIME)

    def _pair_mask(self, seed: int, u: int, v: int) -> np.ndarray:
        """The mask of pair (u, v): from their shared seed, with the pair in a fixed order so
        both sides expand the same vector."""
        lo, hi = min(u, v), max(u, v)
        return prg(seed ^ (lo << 20 | hi), self.length, self.bits)

    def mask(self, u: int) -> np.ndarray:
        """Client ``u``'s total mask: its self mask plus, for every other client v, the pair
        mask added (u < v) or subtracted (u > v)."""
        u = self._check_client(u)
        total = prg(self._self_seed[u], self.length, self.bits)
        for v in range(self.n):
            if v == u:
                continue
            pm = self._pair_mask(self.pair_seed(u, v), u, v)
            total = add_mod(total, pm, self.bits) if u < v else sub_mod(total, pm, self.bits)
        return total

    def masked_input(self, u: int, vector) -> np.ndarray:
        """What client ``u`` sends the server: its integer vector plus its mask, modulo 2**k."""
        v = check_vector(vector, self.bits, f"client {u}'s vector")
        if v.shape != (self.length,):
            raise ValueError(f"client {u}'s vector has {v.size} values, the protocol was set up "
                             f"for {self.length}")
        return add_mod(v, self.mask(u), self.bits)

    # -- what the server does ------------------------------------------------------------------
    def unmask_sum(self, masked: Mapping[int, np.ndarray], recover_dropped: bool = True) -> np.ndarray:
        """The sum, modulo 2**k, of the vectors of the clients in ``masked`` (client id -> masked
        vector). Clients missing from ``masked`` dropped out after the setup: their pairwise masks
        are still inside the survivors' vectors, and ``recover_dropped=True`` removes them by
        rebuilding the dropped clients' Diffie-Hellman secrets from the survivors' shares
        (needs at least ``threshold`` survivors). ``recover_dropped=False`` shows what the server
        gets without that step: self masks removed, the dropped clients' pair masks left in."""
        survivors = sorted(self._check_client(u) for u in masked)
        if not survivors:
            raise ValueError("no client sent a masked vector: there is nothing to sum")
        if len(survivors) < self.threshold:
            raise ValueError(f"only {len(survivors)} clients survived, fewer than the threshold "
                             f"{self.threshold}: the server cannot rebuild the secrets it needs, "
                             "so this round's sum is lost (that is the protocol's guarantee)")
        dropped = [u for u in range(self.n) if u not in set(survivors)]
        total = np.zeros(self.length, dtype=np.uint64)
        for u in survivors:
            vec = check_vector(masked[u], self.bits, f"client {u}'s masked vector")
            if vec.shape != (self.length,):
                raise ValueError(f"client {u}'s masked vector has {vec.size} values, expected {self.length}")
            total = add_mod(total, vec, self.bits)
        helpers = survivors[:self.threshold]
        for u in survivors:  # survivors' self masks: rebuilt from the shares of b_u
            b_u = shamir_reconstruct(self._held[v][u][1] for v in helpers)
            total = sub_mod(total, prg(b_u, self.length, self.bits), self.bits)
        if not recover_dropped:
            return total
        for d in dropped:  # dropped clients' pair masks: rebuild a_d, recompute s_dv for survivors
            a_d = shamir_reconstruct(self._held[v][d][0] for v in helpers)
            for v in survivors:
                seed = pow(self.public_keys[v], a_d, PRIME)
                pm = self._pair_mask(seed, d, v)
                # survivor v added the pair mask if v < d and subtracted it if v > d: undo that
                total = sub_mod(total, pm, self.bits) if v < d else add_mod(total, pm, self.bits)
        return total


def secure_sum(vectors: Sequence, modulus_bits: int = 32, dropped: Iterable[int] = (),
               threshold: int | None = None, seed: int = 0, recover_dropped: bool = True) -> np.ndarray:
    """Run the whole protocol on integer vectors (one per client): set up, mask, drop the clients
    in ``dropped`` after masking, unmask. Returns the sum modulo 2**k of the survivors' vectors."""
    vectors = list(vectors)
    if len(vectors) < 2:
        raise ValueError(f"vectors must come from at least 2 clients (secure aggregation needs "
                         f"2), got {len(vectors)}")
    checked = [check_vector(v, modulus_bits, f"client {i}'s vector") for i, v in enumerate(vectors)]
    lengths = {v.size for v in checked}
    if len(lengths) != 1:
        raise ValueError(f"all clients' vectors must have the same length, got lengths {sorted(lengths)}")
    dropped = set(int(d) for d in dropped)
    if not dropped <= set(range(len(vectors))):
        raise ValueError(f"dropped must be client ids in [0, {len(vectors)}), got {sorted(dropped)}")
    protocol = SecureAggregation(len(vectors), lengths.pop(), modulus_bits, threshold, seed)
    masked = {u: protocol.masked_input(u, v) for u, v in enumerate(checked) if u not in dropped}
    return protocol.unmask_sum(masked, recover_dropped)


def secure_weighted_mean(deltas: Sequence[Sequence[np.ndarray]], counts: Sequence[float],
                         quantizer: Quantizer, dropped: Iterable[int] = (),
                         threshold: int | None = None, seed: int = 0) -> list[np.ndarray]:
    """The example-weighted mean of the clients' updates, computed with secure aggregation.

    Client i sends ``(n_i / n_max) * delta_i`` quantized, where ``n_max`` is the largest count
    (public in this simulation), and its count ``n_i`` as one more exact integer; the server
    learns only the two sums and divides. Clients in ``dropped`` (positions in ``deltas``)
    dropped out after the setup and are left out of the mean. Usable as the ``aggregate`` hook
    of :func:`data_utils.fedavg.run_fedavg` (``functools.partial`` the other arguments)."""
    lists = check_weight_lists(deltas)
    counts = np.asarray(counts, dtype=np.float64)
    if counts.shape != (len(lists),) or not np.all(np.isfinite(counts)) or np.any(counts < 0) \
            or np.any(counts != np.round(counts)):
        raise ValueError(f"counts must be {len(lists)} non-negative whole numbers (examples per "
                         f"client), got {counts.tolist()}")
    dropped = set(int(d) for d in dropped)
    if not dropped <= set(range(len(lists))):
        raise ValueError(f"dropped must be positions in [0, {len(lists)}), got {sorted(dropped)}")
    alive = [i for i in range(len(lists)) if i not in dropped]
    if counts[alive].sum() <= 0:
        raise ValueError("the surviving clients hold no examples: the mean is undefined")
    quantizer.check_summands(len(lists))
    n_max = counts.max()
    vectors, shapes = [], None
    for ws, n in zip(lists, counts):
        flat, shapes = flatten(ws)
        count = np.array([int(n)], dtype=np.uint64) & _mask_of(quantizer.modulus_bits)
        vectors.append(np.concatenate([quantizer.encode(flat * (n / n_max)), count]))
    total = secure_sum(vectors, quantizer.modulus_bits, dropped, threshold, seed)
    weighted_sum = quantizer.decode(total[:-1])
    total_count = float(to_signed(total[-1:], quantizer.modulus_bits)[0])
    mean = weighted_sum * n_max / total_count
    return [m.astype(np.asarray(w).dtype) for m, w in zip(unflatten(mean, shapes), lists[0])]
