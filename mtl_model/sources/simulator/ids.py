"""Id strings (``u000042``, ``e20240301-00000007``) built as fixed-width byte rows, without per-row Python."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

__all__ = ["digits", "id_bytes", "as_strings", "ids", "number_ids", "indices"]


def digits(x: np.ndarray, width: int) -> np.ndarray:
    """ASCII decimal digits of non-negative integers ``x``, zero-padded: (len(x), width) uint8."""
    out = np.empty((x.size, width), np.uint8)
    x = x.astype(np.uint64)
    for k in range(width - 1, -1, -1):
        q = x // 10
        out[:, k] = x - q * 10 + 48
        x = q
    return out


def id_bytes(prefix: str, n: int, min_width: int) -> np.ndarray:
    """Rows ``prefix + zero-padded 0..n-1`` as a (n, w) uint8 array; widens when n needs more digits.

    Built from two small digit tables (the low four digits cycle, the high ones repeat per block).
    """
    width = max(min_width, len(str(max(n - 1, 0))))
    pre = np.frombuffer(prefix.encode("ascii"), np.uint8)
    p = pre.size
    low = min(4, width)
    block = 10**low
    n_blocks = max(1, -(-n // block))
    out = np.empty((n_blocks, block, p + width), np.uint8)
    out[:, :, :p] = pre
    out[:, :, p + width - low :] = digits(np.arange(block), low)[None]
    out[:, :, p : p + width - low] = digits(np.arange(n_blocks), width - low)[:, None]
    return out.reshape(-1, p + width)[:n]


def as_strings(rows: np.ndarray, name: str = "") -> pl.Series:
    """A (n, w) uint8 array of ASCII rows as a polars String series (zero-copy into Arrow)."""
    n, w = rows.shape
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int64)
    arr = pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(rows).reshape(-1))
    )
    return pl.Series(name, arr, dtype=pl.String)


def ids(prefix: str, n: int, width: int) -> pl.Series:
    """``prefix`` + zero-padded ``0..n-1`` as a String series."""
    return as_strings(id_bytes(prefix, n, width))


def number_ids(prefix: str, numbers: np.ndarray, min_width: int) -> pl.Series:
    """``prefix`` + zero-padded ``numbers`` as a String series (vectorised)."""
    width = max(min_width, len(str(int(numbers.max())))) if numbers.size else min_width
    pre = np.frombuffer(prefix.encode("ascii"), np.uint8)
    rows = np.empty((numbers.size, pre.size + width), np.uint8)
    rows[:, : pre.size] = pre
    rows[:, pre.size :] = digits(numbers, width)
    return as_strings(rows)


def indices(values: pl.Series, prefix: str, n: int) -> np.ndarray:
    """Universe indices of ids made by :func:`ids` (``prefix`` + zero-padded index); -1 elsewhere."""
    values = values.cast(pl.String())
    number = values.str.strip_prefix(prefix).cast(pl.Int64, strict=False)
    ok = values.str.starts_with(prefix) & number.is_between(0, n - 1)
    return pl.select(pl.when(ok).then(number).otherwise(-1)).to_series().fill_null(-1).to_numpy()
