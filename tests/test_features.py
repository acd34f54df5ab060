"""Encoders: vocabularies, null/OOV codes, numeric scaling and JSON round trip."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from mtl_model.features import NULL_CODE, OOV_CODE, Encoders, FeatureSpec


@pytest.fixture
def train_rows() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": ["u2", "u1", "u2", "u1", "u3", None],
            "item_id": ["b", "a", "a", "b", "a", "b"],
            "category_id": ["c1", "c1", None, "c2", "c2", "c1"],
            "scene": ["home", "search", "home", "home", "search", "search"],
            "position": pl.Series([1, 2, None, 4, 5, 6], dtype=pl.Int32),
            "price": [10.0, None, 30.0, 5.0, 0.0, 99.0],
            "click": pl.Series([1, 0, 0, 1, 0, 1], dtype=pl.Int8),
            "unrelated": [1, 2, 3, 4, 5, 6],
        }
    )


def test_vocabulary_codes_are_sorted_and_rare_values_are_oov(train_rows: pl.DataFrame) -> None:
    enc = Encoders.fit(train_rows)
    assert enc.vocabs["user_id"] == ["u1", "u2"]  # u3 seen once < min_count=2
    assert enc.vocabs["item_id"] == ["a", "b"]
    assert enc.cardinalities == [4, 4, 4, 4]
    cat, num = enc.encode(train_rows)
    assert cat.dtype == torch.long and cat.shape == (6, 4)
    assert num.dtype == torch.float32 and num.shape == (6, 2)
    assert cat[:, 0].tolist() == [3, 2, 3, 2, OOV_CODE, NULL_CODE]
    assert cat[:, 2].tolist() == [2, 2, NULL_CODE, 3, 3, 2]


def test_unseen_null_and_missing_columns_never_fail(train_rows: pl.DataFrame) -> None:
    enc = Encoders.fit(train_rows, FeatureSpec(min_count=1))
    new = pl.DataFrame(
        {
            "user_id": ["zzz", None],
            "item_id": ["a", "never"],
            "position": pl.Series([None, None], dtype=pl.Int32),
            "price": [None, 1e9],
        }
    )  # no category_id / scene columns at all
    cat, num = enc.encode(new)
    assert cat.tolist() == [[OOV_CODE, 2, NULL_CODE, NULL_CODE], [NULL_CODE, OOV_CODE, NULL_CODE, NULL_CODE]]
    assert torch.isfinite(num).all()
    # null position is filled with the training median, then standardised
    stats = enc.numeric["position"]
    assert num[0, 0].item() == pytest.approx((stats.median - stats.mean) / stats.std, rel=1e-5)


def test_numeric_log_fill_and_standardise(train_rows: pl.DataFrame) -> None:
    enc = Encoders.fit(train_rows)
    logs = np.log1p(np.array([10.0, 30.0, 5.0, 0.0, 99.0]))
    median = float(np.median(logs))
    filled = np.array([logs[0], median, *logs[1:]])
    stats = enc.numeric["price"]
    assert stats.median == pytest.approx(median)
    assert stats.mean == pytest.approx(filled.mean())
    assert stats.std == pytest.approx(filled.std())
    _, num = enc.encode(train_rows)
    assert num[:, 1].numpy() == pytest.approx((filled - filled.mean()) / filled.std(), abs=1e-5)
    assert num[:, 1].mean().item() == pytest.approx(0.0, abs=1e-5)


def test_all_null_numeric_column_is_safe() -> None:
    df = pl.DataFrame({"user_id": ["a", "a"], "position": pl.Series([None, None], dtype=pl.Int32)})
    enc = Encoders.fit(df)
    assert enc.numeric["position"].std == 1.0 and not math.isnan(enc.numeric["position"].median)
    _, num = enc.encode(df)
    assert torch.equal(num, torch.zeros(2, 2))


def test_json_round_trip(train_rows: pl.DataFrame, tmp_path) -> None:
    enc = Encoders.fit(train_rows)
    again = Encoders.from_json(enc.to_json())
    assert again == enc
    enc.save(tmp_path / "encoders.json")
    loaded = Encoders.load(tmp_path / "encoders.json")
    for a, b in zip(enc.encode(train_rows), loaded.encode(train_rows), strict=True):
        assert torch.equal(a, b)


def test_empty_frame_encodes_to_empty_tensors(train_rows: pl.DataFrame) -> None:
    enc = Encoders.fit(train_rows)
    cat, num = enc.encode(train_rows.head(0))
    assert cat.shape == (0, 4) and num.shape == (0, 2)
