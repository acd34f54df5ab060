from datetime import date

import polars as pl

from mtl_model.anomalies import score_users


def activity(n: int = 200) -> pl.DataFrame:
    """n ordinary users plus one click bot (many clicks, nothing bought, clockwork timing)."""
    users = [f"u{i:04d}" for i in range(n)]
    frame = pl.DataFrame(
        {
            "ds": [date(2026, 3, 1)] * n,
            "user_id": users,
            "events": [30 + i % 7 for i in range(n)],
            "sessions": [1 + i % 3 for i in range(n)],
            "impressions": [20 + i % 5 for i in range(n)],
            "clicks": [2 + i % 4 for i in range(n)],
            "carts": [i % 2 for i in range(n)],
            "purchases": [i % 3 == 0 for i in range(n)],
            "spend": [10.0 * (i % 3 == 0) for i in range(n)],
            "distinct_items": [18 + i % 5 for i in range(n)],
            "mean_click_gap_s": [300.0 + i for i in range(n)],
            "std_click_gap_s": [280.0 + i for i in range(n)],
        }
    ).with_columns(pl.col("purchases").cast(pl.Int64))
    bot = pl.DataFrame(
        {
            "ds": [date(2026, 3, 1)],
            "user_id": ["bot"],
            "events": [400],
            "sessions": [20],
            "impressions": [200],
            "clicks": [180],
            "carts": [0],
            "purchases": [0],
            "spend": [0.0],
            "distinct_items": [150],
            "mean_click_gap_s": [30.0],
            "std_click_gap_s": [0.5],
        }
    )
    return pl.concat([frame, bot.cast(frame.schema)])


def test_bot_ranks_first_with_reasons() -> None:
    out = score_users(activity(), top_n=10)
    assert out.columns == ["ds", "entity_type", "entity_id", "score", "rank", "reasons", "model_version"]
    top = out.row(0, named=True)
    assert top["entity_id"] == "bot" and top["rank"] == 1 and top["entity_type"] == "user"
    for reason in ("clicks", "click_rate", "clicks_without_purchase", "click_timing_regularity"):
        assert reason in top["reasons"]
    assert out["rank"].to_list() == list(range(1, out.height + 1))
    assert (out["score"] > 0).all() and out["reasons"].str.len_chars().min() > 0


def test_ordinary_day_flags_nobody_strongly() -> None:
    out = score_users(activity().filter(pl.col("user_id") != "bot"), top_n=10)
    assert out.height == 0 or out["score"].max() < 10
