"""The one hash of Tandem: columnar (numpy over a whole column, no per-value Python) and version-stable.

Every seeded draw and every hash bucket of the project comes from here: the text n-gram buckets
(``learn.features``), the hash buckets of capped vocabularies (``learn.features``), the negative
down-sampling (``learn.samples.sample_negatives``), the test split (``learn.samples.split_test``) and
the scoring slices (``outputs.score.user_part``). Ids are another matter: the md5 event and exposure
ids of dbt and ``sources.landing`` are SQL values, not draws, and stay as they are.

**A string** ``s`` with UTF-8 bytes ``b_0 … b_(n−1)`` hashes to::

    H(s) = mix(h ⊕ mix(n ⊕ seed)),   h = Σ_i b_i · P^(n−1−i) mod 2⁶⁴

with ``P`` the 64-bit FNV prime and ``mix`` the splitmix64 finaliser (Steele, Lea, Flood, OOPSLA
2014). The empty string has ``h = 0, n = 0``; a **null** is hashed as ``h = 0, n = 2⁶⁴ − 1`` (a length
no string has), so it differs from every string and from ``''``. Arithmetic on the bytes alone: the
same in every process, on every machine and with every polars or numpy version (polars' own ``hash``
is documented as stable within one polars version only, so an upgrade would silently redraw).

**Other types** are hashed as their text, polars' cast to String: integers in decimal, dates as
``YYYY-MM-DD``, booleans ``true`` / ``false``, categoricals their label. Floats and datetimes are
refused (their text is a formatting choice that may change).

**A key of several columns** (a DataFrame) combines the column hashes as the string formula combines
bytes, Horner's rule mixed at each step: ``K = H(c_0)``, then ``K = mix(K · P + H(c_j))`` for each
further column ``c_j``. Order matters (``(a, b)`` and ``(b, a)`` differ), a null stays distinct from
``''`` in any column, and a one-column key is that column's hash. (Joining the columns with a
separator before hashing would need a separator that no value holds, and a spelling for null.)

Helpers: :func:`hash64` (uint64), :func:`bucket` (``hash64 mod buckets``) and :func:`unit_interval`
(the top 53 bits / 2⁵³: exactly representable, in [0, 1)). ``tests/test_hashing.py`` checks them
against the formulas written in plain Python integers, in a second process, and for uniformity.
"""

from __future__ import annotations

import numpy as np
import polars as pl

FNV_PRIME = 0x100000001B3
NULL_LENGTH = (1 << 64) - 1  # the length a null is hashed with
_PRIME = np.uint64(FNV_PRIME)
_CHUNK_BYTES = 1 << 22  # bytes hashed at once: bounds the temporary arrays (~8 words per byte)
_HASHED_AS_TEXT = (pl.String, pl.Categorical, pl.Enum, pl.Boolean, pl.Date)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _byte_sums(values: pl.Series, lengths: np.ndarray) -> np.ndarray:
    """``h = Σ b_i · P^(n−1−i) mod 2⁶⁴`` of each string of ``values`` (no nulls, no empty strings)."""
    data = np.frombuffer(values.str.join("").item().encode("utf-8"), dtype=np.uint8).astype(np.uint64)
    ends = np.cumsum(lengths)
    to_end = np.repeat(ends, lengths) - 1 - np.arange(data.size)  # bytes after this one in its string
    powers = np.cumprod(np.full(int(lengths.max()), _PRIME, dtype=np.uint64))
    powers = np.concatenate([np.ones(1, dtype=np.uint64), powers[:-1]])  # P^0, P^1, …
    return np.add.reduceat(data * powers[to_end], ends - lengths)


def hash_strings(values: pl.Series, seed: int) -> np.ndarray:
    """uint64 ``H(s)`` of each string of ``values`` (String; nulls and ``''`` allowed), by the module's
    formula. Columnar: numpy over the column's bytes, a slice of about 4 MB at a time."""
    if values.dtype != pl.String:
        raise TypeError(f"hash_strings needs a String series, not {values.dtype}")
    lengths = values.str.len_bytes().fill_null(0).to_numpy().astype(np.int64)
    h = np.zeros(len(values), dtype=np.uint64)
    full = np.flatnonzero(lengths > 0)
    if full.size:
        cuts = np.arange(_CHUNK_BYTES, lengths.sum(), _CHUNK_BYTES)
        bounds = np.unique(np.searchsorted(np.cumsum(lengths[full]), cuts) + 1)
        for rows in np.split(full, bounds):  # slices of whole strings, about 4 MB each
            if rows.size:
                h[rows] = _byte_sums(values.gather(rows), lengths[rows])
    n = lengths.astype(np.uint64)
    if values.null_count():
        n[values.is_null().to_numpy()] = np.uint64(NULL_LENGTH)
    return _mix64(h ^ _mix64(n ^ np.uint64(seed)))


def _as_text(values: pl.Series) -> pl.Series:
    """``values`` as String, for the types hashed as their text (module docstring)."""
    dtype = values.dtype
    if dtype == pl.String:
        return values
    if dtype.is_integer() or isinstance(dtype, _HASHED_AS_TEXT) or dtype == pl.Null:
        return values.cast(pl.String())
    raise TypeError(f"column {values.name!r}: {dtype} is not hashed (strings, integers, dates, booleans)")


def hash64(values: pl.Series | pl.DataFrame, seed: int) -> np.ndarray:
    """uint64 hash of each row: of the value of a Series, or of the key of a DataFrame's columns, in
    their order (module docstring)."""
    if isinstance(values, pl.Series):
        return hash_strings(_as_text(values), seed)
    if not values.width:
        raise ValueError("hash64 needs at least one key column")
    columns = values.get_columns()
    key = hash_strings(_as_text(columns[0]), seed)
    for column in columns[1:]:
        key = _mix64(key * _PRIME + hash_strings(_as_text(column), seed))
    return key


def bucket(values: pl.Series | pl.DataFrame, buckets: int, seed: int) -> np.ndarray:
    """int64 bucket in ``[0, buckets)`` of each row: :func:`hash64` mod ``buckets``."""
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, not {buckets}")
    return (hash64(values, seed) % np.uint64(buckets)).astype(np.int64)


def unit_interval(values: pl.Series | pl.DataFrame, seed: int) -> np.ndarray:
    """float64 draw in [0, 1) of each row: the top 53 bits of :func:`hash64` / 2⁵³ (exact in a double)."""
    return (hash64(values, seed) >> np.uint64(11)).astype(np.float64) * 2.0**-53
