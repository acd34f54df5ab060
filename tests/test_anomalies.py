from datetime import date

import polars as pl

from mtl_model.anomalies import score_items, score_users


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


def item_activity() -> pl.DataFrame:
    """40 ordinary items at their usual CTR, one spammed (CTR jumps, clicks from one user), one broken
    (many exposures, no clicks)."""
    n = 40
    rows = {
        "ds": [date(2026, 3, 1)] * n,
        "item_id": [f"i{i:03d}" for i in range(n)],
        "exposures": [100 + i for i in range(n)],
        "clicks": [10 + i % 4 for i in range(n)],
        "clicking_users": [9 + i % 3 for i in range(n)],
        "purchases": [1] * n,
        "ctr_trailing_7d": [0.1 + 0.005 * (i % 5) for i in range(n)],
        "exposures_trailing_7d": [700] * n,
        "top_user_click_share": [0.2] * n,
    }
    frame = pl.DataFrame(rows).with_columns((pl.col("clicks") / pl.col("exposures")).alias("ctr"))
    odd = pl.DataFrame(
        {
            "ds": [date(2026, 3, 1)] * 2,
            "item_id": ["spam", "broken"],
            "exposures": [120, 300],
            "clicks": [80, 0],
            "clicking_users": [2, 0],
            "purchases": [0, 0],
            "ctr_trailing_7d": [0.1, 0.1],
            "exposures_trailing_7d": [700, 700],
            "top_user_click_share": [0.9, None],
        }
    ).with_columns((pl.col("clicks") / pl.col("exposures")).alias("ctr"))
    return pl.concat([frame, odd.select(frame.columns).cast(frame.schema)])


def test_items_spam_and_broken_tracking_are_found_with_reasons() -> None:
    out = score_items(item_activity(), top_n=10)
    flagged = dict(zip(out["entity_id"], out["reasons"], strict=True))
    assert set(flagged) == {"spam", "broken"}
    assert "CTR" in flagged["spam"] and "from one user" in flagged["spam"]
    assert "broken tracking" in flagged["broken"]
    assert set(out["entity_type"]) == {"item"}


def test_evaluate_precision_and_recall_per_kind() -> None:
    from mtl_model.anomalies import evaluate

    ds = date(2026, 3, 1)
    flagged = pl.DataFrame(
        {
            "ds": [ds] * 4,
            "entity_type": ["user", "user", "user", "item"],
            "entity_id": ["bot1", "nobody", "fraud1", "spam1"],
            "rank": [1, 2, 3, 1],
        }
    )
    truth = pl.DataFrame(
        {
            "entity_type": ["user", "user", "user", "item", "item"],
            "entity_id": ["bot1", "bot2", "fraud1", "spam1", "broken1"],
            "kind": ["click_farm_bot", "click_farm_bot", "fraud_buyer", "click_spam", "broken_tracking"],
            "ds": [ds] * 5,
        }
    )
    got = {
        (r["entity_type"], r["kind"], r["metric"]): r["value"]
        for r in evaluate(flagged, truth, ds, k=2).to_dicts()
    }
    assert got[("user", "all", "precision_at_k")] == 0.5  # bot1 yes, nobody no
    assert got[("user", "all", "precision")] == 2 / 3 and got[("user", "all", "flagged")] == 3
    assert got[("user", "click_farm_bot", "recall")] == 0.5
    assert (
        got[("user", "fraud_buyer", "recall")] == 1.0 and got[("user", "fraud_buyer", "recall_at_k")] == 0.0
    )
    assert got[("item", "click_spam", "recall")] == 1.0 and got[("item", "broken_tracking", "recall")] == 0.0
