"""The fused score and the per-category cap of the top K; the user × category features of a pair
without events, alike in the training rows, the dbt candidates and the retrieval rows."""

from pathlib import Path

import duckdb
import polars as pl

from mtl_model.outputs.score import UC_CTR_PRIOR, fused_score, top_k, uc_no_events
from tests.conftest import BUILT_DS

UC = ("f_uc_clicks_30d", "f_uc_click_share_30d", "f_uc_ctr_30d", "f_uc_purchases_30d")


def scored() -> pl.DataFrame:
    # one user, 6 items: 4 of category a (the best scores), 2 of category b
    return pl.DataFrame(
        {
            "user_id": ["u"] * 6,
            "item_id": ["i1", "i2", "i3", "i4", "i5", "i6"],
            "scene": ["home"] * 6,
            "category_id": ["a", "a", "a", "a", "b", "b"],
            "score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.4],
        }
    )


def test_category_cap_lets_other_categories_in() -> None:
    capped = top_k(scored(), k=4, max_per_category=2)
    assert capped["item_id"].to_list() == ["i1", "i2", "i5", "i6"]
    assert capped["rank"].to_list() == [1, 2, 3, 4]
    assert top_k(scored(), k=4, max_per_category=0)["item_id"].to_list() == ["i1", "i2", "i3", "i4"]


def test_fused_score_with_price_is_expected_revenue() -> None:
    frame = pl.DataFrame({"p_click": [0.5, 0.1], "p_purchase": [0.1, 0.05], "price": [10.0, 400.0]})
    plain = frame.select(fused_score(("click", "purchase"), 1.0, 1.0))[:, 0].to_list()
    revenue = frame.select(fused_score(("click", "purchase"), 1.0, 1.0, 1.0))[:, 0].to_list()
    assert plain[0] > plain[1]  # the likelier purchase wins without price
    assert revenue == [0.5 * 0.1 * 10.0, 0.1 * 0.05 * 400.0] and revenue[1] > revenue[0]


def test_pair_without_events_gets_zero_counts_and_the_prior() -> None:
    frame = pl.DataFrame(
        {
            "f_u_clicks_30d": [5.0, 0.0, 3.0],
            "f_uc_clicks_30d": [None, None, 2.0],
            "f_uc_click_share_30d": [None, None, 0.5],
            "f_uc_ctr_30d": [None, None, 0.2],
            "f_uc_purchases_30d": [None, None, 1.0],
            "f_uc_related_30d": [None, None, -0.2],
        }
    )
    filled = frame.with_columns(uc_no_events())
    assert filled["f_uc_clicks_30d"].to_list() == [0.0, 0.0, 2.0]
    assert filled["f_uc_purchases_30d"].to_list() == [0.0, 0.0, 1.0]
    assert filled["f_uc_click_share_30d"].to_list() == [0.0, None, 0.5]  # no clicks at all: no share
    assert filled["f_uc_ctr_30d"].to_list() == [UC_CTR_PRIOR, UC_CTR_PRIOR, 0.2]
    assert filled["f_uc_related_30d"].to_list() == [0.0, 0.0, -0.2]


def test_exports_fill_pairs_without_events_like_score(built_once: Path) -> None:
    """training_samples (as of the day before each exposure) and scoring_candidates (as of the run
    date): a pair with no user_category_features row has the values of ``uc_no_events``, never null
    counts; a pair with a row keeps its values."""
    columns = ", ".join(f"x.{c}" for c in UC)
    with duckdb.connect(str(built_once / "warehouse.duckdb"), read_only=True) as con:
        for view, as_of in (
            ("training_samples", "x.ds - 1"),
            ("scoring_candidates", f"date '{BUILT_DS}'"),
        ):
            rows = con.sql(
                f"select x.f_u_clicks_30d, {columns}, x.f_uc_related_30d, u.user_id is not null as has_row, "
                f"u.f_uc_clicks_30d as row_clicks from {view} as x left join user_category_features as u "
                f"on u.user_id = x.user_id and u.category_id = x.category_id and u.ds = {as_of}"
            ).pl()
            without = rows.filter(~pl.col("has_row"))
            assert without.height > 0 and rows.filter(pl.col("has_row")).height > 0, view
            assert rows["f_uc_clicks_30d"].null_count() == 0, view
            expected = (
                without.select("f_u_clicks_30d", *UC, "f_uc_related_30d")
                .with_columns(pl.lit(None, pl.Float64).alias(c) for c in UC)
                .with_columns(uc_no_events())
            )
            assert without.select(UC).equals(expected.select(UC), null_equal=True), view
            kept = rows.filter(pl.col("has_row"))
            assert (kept["f_uc_clicks_30d"] == kept["row_clicks"]).all(), view


def test_exports_read_the_related_taste_of_the_day_before_and_zero_without_a_row(built_once: Path) -> None:
    """f_uc_related_30d: the user_category_related row as of the day before (training) or the run
    date (candidates), 0 where there is none, and defined for pairs the user never touched: some
    rows without a user_category_features row carry a non-zero taste (what the feature is for)."""
    with duckdb.connect(str(built_once / "warehouse.duckdb"), read_only=True) as con:
        for view, as_of in (
            ("training_samples", "x.ds - 1"),
            ("scoring_candidates", f"date '{BUILT_DS}'"),
        ):
            rows = con.sql(
                "select x.f_uc_related_30d as got, r.f_uc_related_30d as want, "
                "u.user_id is not null as has_uc "
                f"from {view} as x left join user_category_related as r "
                f"on r.user_id = x.user_id and r.category_id = x.category_id and r.ds = {as_of} "
                "left join user_category_features as u "
                f"on u.user_id = x.user_id and u.category_id = x.category_id and u.ds = {as_of}"
            ).pl()
            assert rows["got"].null_count() == 0, view
            assert (rows["got"] == rows["want"].fill_null(0.0)).all(), view
            untouched = rows.filter(~pl.col("has_uc"))
            assert untouched.filter(pl.col("got") != 0).height > 0, view
