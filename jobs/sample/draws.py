"""Seeded, vectorised draws and id strings for the sample world (no Python per row)."""
from __future__ import annotations

import calendar
import datetime as dt

import numpy as np
import pyarrow as pa


def mix(x: np.ndarray, bits: int) -> np.ndarray:
    """A bijection of the integers mod 2**bits (xor-shift / odd-multiply rounds)."""
    mask = np.uint64((1 << bits) - 1) if bits < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    h = np.uint64(bits // 2)
    x = x.astype(np.uint64) & mask
    x ^= x >> h
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x &= mask
    x ^= x >> np.uint64(bits // 2 - 3)
    x *= np.uint64(0x94D049BB133111EB)
    x &= mask
    x ^= x >> h
    return x


HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# byte -> its two hex characters, as one little-endian uint16 (first char in the low byte)
_HEX2 = (HEX[np.arange(256) >> 4].astype(np.uint16)
         | (HEX[np.arange(256) & 15].astype(np.uint16) << np.uint16(8)))


def hex_strings(prefix: str, values: np.ndarray, nhex: int) -> pa.Array:
    """pyarrow strings ``prefix + lowercase hex of values`` (nhex even, <= 16), built without Python loops."""
    n = len(values)
    nb = nhex // 2
    raw = values.astype(">u8").view(np.uint8).reshape(n, 8)[:, 8 - nb:]
    chars = _HEX2[raw].view(np.uint8).reshape(n, nhex)
    p = prefix.encode()
    width = len(p) + nhex
    if n * width >= 2**31:
        raise ValueError("too many strings for one array")
    out = np.empty((n, width), dtype=np.uint8)
    out[:, :len(p)] = np.frombuffer(p, dtype=np.uint8)
    out[:, len(p):] = chars
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out)])


def ids(prefix: str, n: int, salt: int, nhex: int) -> pa.Array:
    """n distinct pseudo-random ids (a bijection of 0..n-1, so never a collision)."""
    bits = 4 * nhex
    vals = mix(np.arange(n, dtype=np.uint64) + np.uint64(salt % (1 << bits)), bits)
    return hex_strings(prefix, vals, nhex)


def zipf_weights(n: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Weights proportional to rank**-s, ranks shuffled over the n items."""
    w = (np.arange(1, n + 1, dtype=np.float64)) ** -s
    return w[rng.permutation(n)]


def cdf(weights: np.ndarray) -> np.ndarray:
    c = np.cumsum(weights, dtype=np.float64)
    return c / c[-1]


def draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


LUT_SIZE = 1 << 14


def lut(cdf: np.ndarray) -> np.ndarray:
    """A look-up table for drawing from a small categorical: category = lut[int(u * LUT_SIZE)]."""
    return draw(cdf, (np.arange(LUT_SIZE) + 0.5) / LUT_SIZE).astype(np.int32)


def lut_index(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, LUT_SIZE, n, dtype=np.int32)


def pow15(u: np.ndarray) -> np.ndarray:
    """u ** 1.5, faster."""
    return u * np.sqrt(u)


def retain_freed_memory() -> None:
    """Let glibc keep freed buffers for reuse instead of returning them to the OS.

    Each day allocates and frees a few GB of large numpy/Arrow buffers; with glibc's
    defaults every one is a fresh mmap whose pages are faulted in again, which costs
    more than the generation itself. Best effort: a no-op off glibc.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)            # M_MMAP_THRESHOLD
        libc.mallopt(-1, 2**31 - 1)          # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
EPOCH = dt.date(1970, 1, 1)


def day_start_us(d: dt.date) -> int:
    """Microseconds since the epoch at the start of day `d` (UTC)."""
    return (d - EPOCH).days * US_PER_DAY


def month_add(year: int, month: int, k: int) -> tuple[int, int]:
    i = year * 12 + (month - 1) + k
    return i // 12, i % 12 + 1


def month_key(year: int, month: int) -> int:
    return year * 12 + month - 1


def near_month_end(d: dt.date) -> bool:
    """The export carries next month's campaigns during the last week of a month."""
    return d.day > calendar.monthrange(d.year, d.month)[1] - 7
