"""Encoders: vocabularies, null/OOV codes, numeric scaling and JSON round trip."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from mtl_model.learn.features import (
    BUCKET_SEED,
    ENCODERS_FORMAT,
    NULL_CODE,
    OOV_CODE,
    Encoders,
    FeatureSpec,
)
from tests.test_hashing import hash_by_hand


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


def test_prefixed_numeric_columns_are_picked_up(train_rows: pl.DataFrame) -> None:
    rows = train_rows.with_columns(
        pl.Series("f_views", [3, 1, None, 4, 1, 5], dtype=pl.Int64),
        pl.Series("f_flag", [True, False, True, True, False, False]),
        pl.Series("f_label", ["a", "b", "c", "d", "e", "f"]),  # not numeric: ignored
        pl.Series("views", [1, 2, 3, 4, 5, 6]),  # no prefix: ignored
    )
    enc = Encoders.fit(rows)
    assert enc.spec.numeric == ("position", "price", "f_flag", "f_views")  # spec columns, then sorted extras
    assert enc.n_numeric == 4
    _, num = enc.encode(rows)
    assert num.shape == (6, 4) and torch.isfinite(num).all()
    assert num[:, 3].mean().item() == pytest.approx(0.0, abs=1e-5)  # standardised on the training rows
    again = Encoders.from_json(enc.to_json())
    assert again.spec.numeric == enc.spec.numeric
    # scoring rows without the column: training median, never an error
    _, num_missing = again.encode(rows.drop("f_views"))
    stats = enc.numeric["f_views"]
    assert num_missing[0, 3].item() == pytest.approx((stats.median - stats.mean) / stats.std, rel=1e-5)
    assert Encoders.fit(rows, FeatureSpec(numeric_prefix="")).n_numeric == 2


def test_large_vocabularies_are_capped_and_the_rest_hashed() -> None:
    users = [f"u{i}" for i in range(10) for _ in range(10 - i)]  # u0 most frequent, u9 once
    df = pl.DataFrame({"user_id": users, "scene": ["home"] * len(users)})
    spec = FeatureSpec(max_vocab=3, hash_buckets=5, min_count=1)
    enc = Encoders.fit(df, spec)
    assert enc.vocabs["user_id"] == ["u0", "u1", "u2"] and enc.hashed == {"user_id": 5}
    assert "scene" not in enc.hashed  # under the cap: plain vocabulary
    assert enc.cardinalities[0] == 2 + 3 + 5
    new = pl.DataFrame({"user_id": ["u0", "u2", "u5", "u9", "never-seen", None], "scene": ["home"] * 6})
    codes = enc.encode(new)[0][:, 0].tolist()
    assert codes[:2] == [2, 4] and codes[-1] == NULL_CODE
    first_bucket = 2 + 3
    assert all(first_bucket <= c < first_bucket + 5 for c in codes[2:5])
    assert codes[2:5] == [first_bucket + hash_by_hand(v, BUCKET_SEED) % 5 for v in ("u5", "u9", "never-seen")]
    # the same value gets the same bucket in any frame, process or machine (mtl_model.hashing)
    assert enc.encode(new.reverse())[0][:, 0].tolist() == codes[::-1]
    assert (
        hash_by_hand("u123", BUCKET_SEED) % 1000 == 451
        and hash_by_hand("item-42", BUCKET_SEED) % 4096 == 3006
    )
    big = Encoders.fit(df, replace(spec, hash_buckets=4096))
    never = pl.DataFrame({"user_id": ["item-42", "u123"], "scene": ["home"] * 2})
    assert big.encode(never)[0][:, 0].tolist() == [
        first_bucket + 3006,
        first_bucket + hash_by_hand("u123", BUCKET_SEED) % 4096,
    ]
    # encoders of format 5 hashed with BLAKE2b: refused when a column is capped, read back otherwise
    old = enc.to_dict() | {"format": 5}
    with pytest.raises(ValueError, match="BLAKE2b"):
        Encoders.from_dict(old)
    assert Encoders.from_dict(old | {"hashed": {}}).hashed == {}
    loaded = Encoders.from_json(enc.to_json())
    assert loaded == enc and torch.equal(loaded.encode(new)[0], enc.encode(new)[0])


def test_count_and_amount_features_get_a_log_by_a_recorded_rule(train_rows: pl.DataFrame) -> None:
    rows = train_rows.with_columns(
        pl.Series("f_clicks_30d", [0, 3, 1, 40, 2, 900], dtype=pl.Int64),  # heavy-tailed count
        pl.Series("f_spend_30d", [0.0, None, 12.5, 0.0, 830.0, 4.0]),  # amount with a null
        pl.Series("f_ctr_30d", [0.1, 0.5, 0.02, 0.9, 1.0, 0.3]),  # a rate in [0, 1]: stays linear
        pl.Series("f_price_change", [-3.0, 2.0, 0.0, 5.0, -1.0, 8.0]),  # negatives: stays linear
        pl.Series("f_flag", [True, False, True, True, False, False]),  # 0 / 1: stays linear
    )
    enc = Encoders.fit(rows)
    assert enc.spec.signed_log_numeric == ("f_clicks_30d", "f_spend_30d")
    assert enc.spec.log_numeric == ("price",)  # the spec's own log columns are unchanged
    logs = np.log1p(np.array([0, 3, 1, 40, 2, 900], dtype=float))
    stats = enc.numeric["f_clicks_30d"]
    assert stats.mean == pytest.approx(logs.mean()) and stats.std == pytest.approx(logs.std())
    col = enc.spec.numeric.index("f_clicks_30d")
    _, num = enc.encode(rows)
    assert num[:, col].numpy() == pytest.approx((logs - logs.mean()) / logs.std(), abs=1e-5)
    ctr = enc.spec.numeric.index("f_ctr_30d")
    ctr_values = rows["f_ctr_30d"].to_numpy()
    assert num[:, ctr].numpy() == pytest.approx((ctr_values - ctr_values.mean()) / ctr_values.std(), abs=1e-5)
    # a negative count at scoring time (bad data) maps to −log1p(|x|): finite, never NaN
    _, bad = enc.encode(rows.with_columns(pl.lit(-5, dtype=pl.Int64).alias("f_clicks_30d")))
    assert bad[0, col].item() == pytest.approx((-math.log1p(5) - stats.mean) / stats.std, rel=1e-5)
    # the choice is in the JSON: a reader applies it without refitting
    data = enc.to_dict()
    assert data["format"] == ENCODERS_FORMAT == 6
    assert (
        data["spec"]["signed_log_numeric"] == ["f_clicks_30d", "f_spend_30d"] and data["spec"]["log_counts"]
    )
    again = Encoders.from_json(enc.to_json())
    assert again == enc and torch.equal(again.encode(rows)[1], num)
    off = Encoders.fit(rows, FeatureSpec(log_counts=False))
    assert off.spec.signed_log_numeric == () and not torch.equal(off.encode(rows)[1], num)


def test_format_2_encoders_read_back_without_count_logs(train_rows: pl.DataFrame) -> None:
    rows = train_rows.with_columns(pl.Series("f_clicks_30d", [0, 3, 1, 40, 2, 900], dtype=pl.Int64))
    data = Encoders.fit(rows, FeatureSpec(log_counts=False)).to_dict()
    data["format"] = 2  # what the previous version wrote: no log_counts / signed_log_numeric keys
    del data["spec"]["log_counts"], data["spec"]["signed_log_numeric"]
    old = Encoders.from_dict(data)
    assert old.spec.signed_log_numeric == () and old.spec.log_counts is False
    linear = rows["f_clicks_30d"].to_numpy().astype(float)
    col = old.spec.numeric.index("f_clicks_30d")
    assert old.encode(rows)[1][:, col].numpy() == pytest.approx(
        (linear - linear.mean()) / linear.std(), abs=1e-5
    )


def test_format_1_encoders_still_load(train_rows: pl.DataFrame) -> None:
    data = Encoders.fit(train_rows).to_dict()
    data["format"] = 1
    del data["hashed"]
    for key in ("numeric_prefix", "max_vocab", "hash_buckets"):
        del data["spec"][key]
    old = Encoders.from_dict(data)
    assert old.hashed == {} and old.spec.max_vocab == 0
    assert torch.equal(old.encode(train_rows)[0], Encoders.fit(train_rows).encode(train_rows)[0])
    data["format"] = 99
    with pytest.raises(ValueError, match="unsupported encoders format 99"):
        Encoders.from_dict(data)


def test_a_column_constant_in_training_is_zero_at_scoring(train_rows: pl.DataFrame) -> None:
    """A first night's features are built on an empty history (all 0); the next day's are not. The
    network never saw such a column vary, so every value of it must encode to the 0 it trained on."""
    rows = train_rows.with_columns(pl.Series("f_u_clicks_7d", [0] * 6, dtype=pl.Int64))
    enc = Encoders.fit(rows)
    stats = enc.numeric["f_u_clicks_7d"]
    assert stats.constant and stats.std == 1.0
    assert not enc.numeric["price"].constant
    later = rows.with_columns(pl.Series("f_u_clicks_7d", [0, 5, 40, 1, 0, 900], dtype=pl.Int64))
    col = enc.spec.numeric.index("f_u_clicks_7d")
    _, num = enc.encode(later)
    assert torch.equal(num[:, col], torch.zeros(6))
    assert torch.equal(num[:, :col], enc.encode(rows)[1][:, :col])  # the other columns as before
    assert Encoders.from_json(enc.to_json()).numeric["f_u_clicks_7d"].constant
    data = enc.to_dict()
    del data["numeric"]["f_u_clicks_7d"]["constant"]  # an encoder saved before the flag
    assert not Encoders.from_dict(data).numeric["f_u_clicks_7d"].constant


def test_encoding_in_chunks_equals_encoding_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoders.encode writes ENCODE_ROWS rows at a time into its tensors: a chunk of 3 rows gives the
    codes and values of one pass over the frame, for capped (hashed) columns, the sequence and the text."""
    import mtl_model.learn.features as features

    n = 20
    df = pl.DataFrame(
        {
            "user_id": [f"u{i % 7}" for i in range(n)],
            "item_id": [f"i{i % 5}" for i in range(n)],
            "category_id": [None if i % 4 == 0 else f"c{i % 3}" for i in range(n)],
            "scene": ["home", "search"] * (n // 2),
            "position": list(range(n)),
            "price": [float(i) for i in range(n)],
            "f_u_clicks_7d": [float(i % 3) for i in range(n)],
            "hist_item_ids": [[f"i{(i + k) % 5}" for k in range(i % 4)] for i in range(n)],
            "title": [f"red phone {i % 6}" for i in range(n)],
            "query": [None if i % 2 else f"phone {i}" for i in range(n)],
        }
    )
    spec = FeatureSpec(
        max_vocab=3, hash_buckets=7, min_count=1, history=("hist_item_ids",), history_length=3,
        text=("title", "query"), text_length=4, text_buckets=101,
    )  # fmt: skip
    enc = Encoders.fit(df, spec)
    assert enc.hashed  # user_id and item_id are capped: their rarer values are hashed
    whole = enc.encode(df)
    monkeypatch.setattr(features, "ENCODE_ROWS", 3)
    chunked = enc.encode(df)
    assert chunked[0].dtype == torch.int64 and chunked[0].shape == (n, enc.n_categorical)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
    assert whole[0][:, -8:].ne(0).any()  # the text's codes are in the compared columns


def test_input_columns_are_what_the_encoders_read() -> None:
    from mtl_model.learn.features import input_columns

    names = ["ds", "exposure_id", "user_id", "scene", "price", "f_u_x", "hist_item_ids", "title", "exposure"]
    assert input_columns(FeatureSpec(), names) == ["user_id", "scene", "price", "f_u_x"]
    spec = FeatureSpec(history=("hist_item_ids",), history_length=2, text=("title",))
    assert input_columns(spec, names) == ["user_id", "scene", "price", "f_u_x", "hist_item_ids", "title"]
