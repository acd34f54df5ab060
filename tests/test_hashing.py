"""mtl_model.hashing, the one hash: against its formulas written in plain Python integers, the same in
another process, chunk-independent, uniform, and refusing the types whose text is not stable."""

from __future__ import annotations

import subprocess
import sys
from datetime import date

import numpy as np
import polars as pl
import pytest

from mtl_model import hashing
from mtl_model.hashing import bucket, hash64, hash_strings, unit_interval

MASK = (1 << 64) - 1
FNV_PRIME = 0x100000001B3
SEED = 20261202


def mix_by_hand(z: int) -> int:
    """splitmix64's finaliser in plain Python integers."""
    z = (z + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def hash_by_hand(text: str | None, seed: int) -> int:
    """The module's formula: Σ b_i · P^(n−1−i) mod 2⁶⁴ over the UTF-8 bytes, then mixed with the length
    and the seed; a null has h = 0 and the length 2⁶⁴ − 1."""
    if text is None:
        return mix_by_hand(0 ^ mix_by_hand(MASK ^ seed))
    data = text.encode("utf-8")
    h = 0
    for b in data:
        h = (h * FNV_PRIME + b) & MASK  # Horner's rule: the same sum of b_i · P^(n−1−i)
    return mix_by_hand(h ^ mix_by_hand(len(data) ^ seed))


def key_by_hand(row: tuple[str | None, ...], seed: int) -> int:
    """K = H(c_0), then K = mix(K · P + H(c_j))."""
    key = hash_by_hand(row[0], seed)
    for value in row[1:]:
        key = mix_by_hand((key * FNV_PRIME + hash_by_hand(value, seed)) & MASK)
    return key


WORDS = ["u123", "item-42", "", None, "手机", "a", "ab", "ba", "x" * 300]


def test_strings_buckets_and_draws_are_the_formula() -> None:
    got = hash_strings(pl.Series(WORDS, dtype=pl.String), SEED)
    want = [hash_by_hand(w, SEED) for w in WORDS]
    assert [int(v) for v in got] == want
    assert len(set(want)) == len(want)  # '' and null differ, as do 'ab' and 'ba'
    assert int(hash_strings(pl.Series(["a"]), SEED + 1)[0]) != want[5]  # the seed enters
    assert bucket(pl.Series(WORDS), 1000, SEED).tolist() == [w % 1000 for w in want]
    assert unit_interval(pl.Series(WORDS), SEED).tolist() == [(w >> 11) / 2**53 for w in want]
    assert hash_strings(pl.Series([], dtype=pl.String), SEED).size == 0


def test_other_types_hash_as_their_text_and_floats_are_refused() -> None:
    ints = pl.Series([7, -3, None], dtype=pl.Int32)
    days = pl.Series([date(2026, 11, 1), None])
    flags = pl.Series([True, False])
    cats = pl.Series(["home", "search"], dtype=pl.Categorical)
    assert [int(v) for v in hash64(ints, SEED)] == [hash_by_hand(v, SEED) for v in ("7", "-3", None)]
    assert [int(v) for v in hash64(days, SEED)] == [hash_by_hand(v, SEED) for v in ("2026-11-01", None)]
    assert [int(v) for v in hash64(flags, SEED)] == [hash_by_hand(v, SEED) for v in ("true", "false")]
    assert [int(v) for v in hash64(cats, SEED)] == [hash_by_hand(v, SEED) for v in ("home", "search")]
    with pytest.raises(TypeError, match="Float64 is not hashed"):
        hash64(pl.Series("price", [1.5]), SEED)
    with pytest.raises(TypeError, match="String series"):
        hash_strings(pl.Series([1]), SEED)
    with pytest.raises(ValueError, match="at least 1"):
        bucket(pl.Series(["a"]), 0, SEED)


def test_a_key_of_several_columns_is_the_formula_and_its_order_counts() -> None:
    rows = [("2026-11-01", "u1", "i9", None), ("2026-11-01", "u1", "i9", "home"), ("2026-11-02", "", "", "")]
    frame = pl.DataFrame(rows, schema=["ds", "user_id", "item_id", "scene"], orient="row")
    frame = frame.with_columns(pl.col("ds").str.to_date())
    assert [int(v) for v in hash64(frame, SEED)] == [key_by_hand(r, SEED) for r in rows]
    swapped = frame.select("item_id", "user_id", "ds", "scene")
    assert not np.array_equal(hash64(swapped, SEED), hash64(frame, SEED))
    one = frame.select("user_id")
    assert np.array_equal(hash64(one, SEED), hash64(frame["user_id"], SEED))  # one column: its hash
    with pytest.raises(ValueError, match="at least one"):
        hash64(pl.DataFrame(), SEED)


def test_the_same_in_another_process_and_in_any_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [f"user-{i}" for i in range(2000)] + WORDS
    got = hash64(pl.Series(values), SEED)
    code = "import polars as pl; from mtl_model.hashing import hash64; "
    code += f"print(list(map(int, hash64(pl.Series({values!r}), {SEED}))))"
    other = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONHASHSEED": "123"},
        check=True,
    )
    assert other.stdout.strip() == str([int(v) for v in got])
    monkeypatch.setattr(hashing, "_CHUNK_BYTES", 7)  # about 1 string per slice instead of all at once
    assert np.array_equal(hash64(pl.Series(values), SEED), got)


def test_buckets_and_draws_are_uniform() -> None:
    keys = pl.Series([f"u{i}" for i in range(100_000)])  # sequential ids: the hard case for a weak hash
    counts = np.bincount(bucket(keys, 16, SEED), minlength=16)
    assert np.abs(counts / 6250 - 1).max() < 0.04, counts  # sd of a count ≈ 77 (1.2 %)
    draws = unit_interval(keys, SEED)
    assert draws.min() >= 0 and draws.max() < 1
    assert abs((draws < 0.3).mean() - 0.3) < 0.006 and abs(draws.mean() - 0.5) < 0.004
    rows = range(100_000)  # 100k keys (day, user): 7 days of 14,286 users, the users' ids sequential
    frame = pl.DataFrame({"day": [i % 7 for i in rows], "user": [f"u{i // 7}" for i in rows]})
    per_key = np.bincount(bucket(frame, 16, SEED), minlength=16)
    assert np.abs(per_key / 6250 - 1).max() < 0.04, per_key
    assert np.unique(hash64(frame, SEED)).size == 100_000  # no collision among the keys


def test_the_draws_of_negatives_and_score_slices_are_this_hash() -> None:
    """sample_negatives keeps a negative when unit_interval(ROW_KEY, seed) < rate, in the scan's filter;
    user_part is bucket(user_id, parts, PART_SEED): both the formulas written plainly."""
    from mtl_model.learn.samples import sample_negatives
    from mtl_model.outputs.score import PART_SEED, user_part

    n = 400
    rows = pl.DataFrame(
        {
            "ds": [date(2026, 11, 1 + i % 3) for i in range(n)],
            "user_id": [f"u{i % 37}" for i in range(n)],
            "item_id": [f"i{i}" for i in range(n)],
            "scene": [None if i % 5 == 0 else "home" for i in range(n)],
            "position": pl.Series([i % 20 for i in range(n)], dtype=pl.Int32),
            "click": [int(i % 9 == 0) for i in range(n)],
        }
    )
    text = rows.select(
        pl.col("ds").cast(pl.String), "user_id", "item_id", "scene", pl.col("position").cast(pl.String)
    )
    draws = [(key_by_hand(r, 11) >> 11) / 2**53 for r in text.iter_rows()]
    want = [i for i in range(n) if rows["click"][i] or draws[i] < 0.3]
    kept = sample_negatives(rows.lazy().with_row_index("i"), ("click",), 0.3, 11).collect()
    assert kept["i"].to_list() == want and 0.3 * n < len(want) < 0.5 * n
    parts = rows.select(user_part(5).alias("part"))["part"].to_list()
    assert parts == [hash_by_hand(u, PART_SEED) % 5 for u in rows["user_id"]]
