from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mtl_model.config import Settings
from mtl_model.learn.features import Encoders
from mtl_model.learn.networks import build_model
from mtl_model.learn.registry import save_version, set_current
from mtl_model.outputs.anomalies import (
    count_z,
    detect_day,
    entity_evidence,
    real_exposures,
    score_items,
    score_users,
)
from mtl_model.pipeline import nightly


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


def test_ordinary_day_flags_nobody_and_one_planted_heavy_clicker_alone() -> None:
    """The 200 ordinary users: no feature is 3 robust sd from the day's median, so nobody is flagged.
    The same day with one of them clicking 12 times (the others 2-5) flags that user, and only them."""
    ordinary = activity().filter(pl.col("user_id") != "bot")
    assert ordinary.height == 200 and score_users(ordinary, top_n=1000).is_empty()
    heavy = pl.when(pl.col("user_id") == "u0000").then(12).otherwise(pl.col("clicks"))
    out = score_users(ordinary.with_columns(clicks=heavy), top_n=1000)
    assert out["entity_id"].to_list() == ["u0000"]
    assert out["reasons"][0] == "clicks 12.0 vs typical 4 (z=5.4); click_rate 0.6 vs typical 0.167 (z=7.0)"


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
    from mtl_model.outputs.anomalies import evaluate

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


# ---------------------------------------------------------------- the joint model's view (joint-model-z-v1)

DS = date(2026, 3, 1)
TASKS = ("click", "cart", "purchase")


def test_count_z_is_a_standard_z_under_the_model() -> None:
    """Labels drawn from the model's own probabilities: z has mean ~0, sd ~1 and rare |z| > 3, from
    entities with one exposure to hundreds and probabilities from 0.001 to 0.6 (purchases to clicks)."""
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 300, 3000)
    p = np.exp(rng.uniform(np.log(1e-3), np.log(0.6), sizes.sum()))
    scored = pl.DataFrame(
        {
            "user_id": np.repeat(np.arange(sizes.size), sizes).astype(str),
            "y_purchase": (rng.random(p.size) < p).astype(np.int64),
            "p_purchase": p,
        }
    )
    z = entity_evidence(scored, "user_id")["mz_purchase"]
    assert abs(z.mean()) < 0.05
    # mid-p z of small counts, and the Poisson tail where p is large, are a little under-dispersed:
    # never overstated (a normal approximation gives z ~ 30 for one event where p = 0.001)
    assert 0.75 < z.std() < 1.02
    assert (z.abs() > 3).mean() < 0.003  # a standard normal: 0.0027


def test_count_z_of_planted_patterns() -> None:
    n = torch.tensor([14.0, 0.0, 5.0, 0.0, 3.0])
    expected = torch.tensor([0.8, 12.0, 5.0, 0.05, 0.05])
    z = count_z(n, expected)
    assert z[0] > 6  # 14 purchases where 0.8 were expected
    assert z[1] < -4  # no clicks where 12 were expected (broken tracking)
    assert abs(z[2]) < 0.3 and abs(z[3]) < 0.1  # what the model expected
    assert z[4] > 4  # three rare events: improbable, but not the ~13 of a normal approximation
    # far tails stay finite and ordered (probabilities of 1e-40 are not rounded to 0 or 1)
    far = count_z(torch.tensor([60.0, 80.0, 0.0]), torch.tensor([5.9, 5.9, 100.0]))
    assert torch.isfinite(far).all() and 10 < far[0] < far[1] and far[2] < -10
    # exact: z of zero events = probit of half the Poisson probability of zero
    assert torch.isclose(z[1], torch.special.ndtri(torch.tensor(np.exp(-12.0) / 2, dtype=torch.float64)))


def world(seed: int = 0) -> pl.DataFrame:
    """One day of exposures with the true probabilities (a perfect model) and labels drawn from them:
    400 ordinary users, a heavy user who sees 500 items in 3 sessions and clicks as the model expects
    of anyone, a fraud account (unknown to the model) that buys all 8 items it sees, and a broken item
    whose 70 exposures (7 clicks expected) lost their clicks."""
    rng = np.random.default_rng(seed)
    users = [f"u{i:03d}" for i in range(400)]
    sizes = 10 + rng.poisson(10, len(users))
    user = np.repeat(users, sizes).tolist() + ["heavy"] * 500 + ["fraud"] * 8 + list(rng.choice(users, 70))
    item = [f"i{i:02d}" for i in rng.integers(0, 60, sizes.sum() + 508)] + ["broken"] * 70
    n = len(user)
    p_click = np.concatenate([1 / (1 + np.exp(2.2 - rng.normal(0, 0.5, n - 70))), np.full(70, 0.1)])
    frame = pl.DataFrame(
        {
            "ds": [DS] * n,
            "user_id": user,
            "item_id": item,
            "scene": ["home"] * n,
            "position": rng.integers(1, 20, n),
            "price": np.where(np.array(user) == "fraud", 500.0, 20.0),
            "p_click": p_click,
            "p_cart": 0.2 * p_click,
            "p_purchase": 0.05 * p_click,
        }
    )
    draw = {t: (rng.random(n) < frame[f"p_{t}"].to_numpy()).astype(np.int64) for t in TASKS}
    fraud = frame["user_id"] == "fraud"
    return frame.with_columns(
        click=pl.when(fraud).then(1).when(pl.col("item_id") == "broken").then(0).otherwise(draw["click"]),
        cart=pl.when(fraud).then(1).otherwise(draw["cart"]),
        purchase=pl.when(fraud).then(1).otherwise(draw["purchase"]),
    )


def activities(exposures: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The day's user_activity and item_activity exports, as dbt would compute them from the exposures
    (every item's trailing CTR = its usual rate; sessions of 10 exposures, ordinary click timing)."""
    users = exposures.group_by("user_id").agg(
        pl.col("ds").first(),
        pl.len().alias("impressions"),
        pl.col("click").sum().alias("clicks"),
        pl.col("purchase").sum().alias("purchases"),
        (pl.col("purchase") * pl.col("price")).sum().alias("spend"),
    )
    users = users.with_columns(
        sessions=pl.when(pl.col("user_id") == "heavy").then(3).otherwise(pl.col("impressions") // 10 + 1),
        mean_click_gap_s=pl.lit(300.0),
        std_click_gap_s=pl.lit(280.0),
        account_age_days=pl.when(pl.col("user_id") == "fraud").then(2).otherwise(400),
    ).sort("user_id")
    per_user = exposures.group_by("item_id", "user_id").agg(pl.col("click").sum().alias("n"))
    items = (
        exposures.group_by("item_id")
        .agg(
            pl.col("ds").first(),
            pl.len().alias("exposures"),
            pl.col("click").sum().alias("clicks"),
            pl.col("p_click").mean().alias("ctr_trailing_7d"),
        )
        .join(per_user.group_by("item_id").agg(pl.col("n").max().alias("top")), on="item_id")
        .with_columns(
            ctr=pl.col("clicks") / pl.col("exposures"),
            top_user_click_share=pl.col("top") / pl.when(pl.col("clicks") > 0).then(pl.col("clicks")),
        )
        .sort("item_id")
    )
    return users, items


def evidence(exposures: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The perfect model's evidence; it knows every user but the fraud account, and every item."""
    scored = exposures.select(
        "user_id", "item_id", *[pl.col(t).alias(f"y_{t}") for t in TASKS], *[f"p_{t}" for t in TASKS]
    )
    known_users = exposures.filter(pl.col("user_id") != "fraud")["user_id"].unique()
    return (
        entity_evidence(scored, "user_id", known_users.to_list()),
        entity_evidence(scored, "item_id", exposures["item_id"].unique().to_list()),
    )


def test_combined_detector_finds_planted_anomalies_and_explains_heavy_users() -> None:
    exposures = world()
    users, items = activities(exposures)
    user_evidence, item_evidence = evidence(exposures)

    alone = score_users(users, top_n=1000)
    combined = score_users(users, top_n=1000, evidence=user_evidence, model_version="v-test")
    assert set(alone["model_version"]) == {"joint-model-z-v1+no-model"}
    assert set(combined["model_version"]) == {"joint-model-z-v1+v-test"}
    # the heavy user clicks a lot, as the model expects of anyone shown 500 items: explained away
    assert "heavy" in alone["entity_id"].to_list()
    assert "heavy" not in combined["entity_id"].to_list()
    assert combined.height < alone.height
    fraud = combined.row(0, named=True)  # unknown to the model: its behaviour reasons stand, and the model's
    assert fraud["entity_id"] == "fraud"
    assert "more purchases than the model expected: 8 in 8 exposures" in fraud["reasons"]
    assert "new_account_spend" in fraud["reasons"]

    # broken tracking: 0 of 7 expected clicks is below the behaviour threshold (normal approximation,
    # z = 2.8) but improbable under the model (Poisson tail, z = -3.3)
    assert "broken" not in score_items(items, top_n=1000)["entity_id"].to_list()
    flagged = score_items(items, top_n=1000, evidence=item_evidence, model_version="v-test")
    broken = flagged.filter(pl.col("entity_id") == "broken").row(0, named=True)
    assert (
        "fewer clicks than the model expected: 0 in 70 exposures, 7.0 expected (z=-3.3)" in broken["reasons"]
    )


def write_exports(settings: Settings, exposures: pl.DataFrame) -> None:
    users, items = activities(exposures)
    folder = settings.export_dir(DS)
    folder.mkdir(parents=True)
    users.write_parquet(folder / "user_activity.parquet")
    items.write_parquet(folder / "item_activity.parquet")
    exposures.drop("p_click", "p_cart", "p_purchase").write_parquet(folder / "samples.parquet")


def test_detect_day_without_a_model_falls_back_to_behaviour(tmp_path: Path, monkeypatch) -> None:
    settings = Settings(home=tmp_path)
    write_exports(settings, world())
    result = detect_day(settings, DS)
    assert result.model_version is None and result.note.startswith("behaviour only")
    assert result.detector == "joint-model-z-v1+no-model"
    out = pl.read_parquet(result.path)
    assert set(out["model_version"]) == {"joint-model-z-v1+no-model"} and out.height > 0
    assert not out["reasons"].str.contains("model expected").any()

    monkeypatch.setenv("TANDEM_HOME", str(tmp_path))  # the Airflow step: the same, as a JSON summary
    summary = nightly.anomalies(DS.isoformat())
    assert summary["model_version"] is None and summary["detector"] == "joint-model-z-v1+no-model"
    assert "no usable current model" in summary["note"]


def test_detect_day_uses_the_current_model_and_survives_a_broken_one(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    exposures = world()
    write_exports(settings, exposures)
    encoders = Encoders.fit(exposures)
    config = {"architecture": "shared_bottom", "tasks": list(TASKS), "embedding_dim": 4}
    config |= {"hidden_dims": [8], "tower_dim": 4, "model": {}}
    torch.manual_seed(0)
    model = build_model(
        "shared_bottom", encoders.cardinalities, encoders.n_numeric, TASKS, 4, (8,), tower_dim=4
    )
    save_version(settings, "20260301-test", model, encoders, config, {})
    set_current(settings, "20260301-test")

    result = detect_day(settings, DS)
    assert result.model_version == "20260301-test" and "joint model 20260301-test" in result.note
    out = pl.read_parquet(result.path)
    assert set(out["model_version"]) == {"joint-model-z-v1+20260301-test"}

    (settings.models_dir / "20260301-test" / "model.pt").write_bytes(b"not a model")
    broken = detect_day(settings, DS)  # never fails the night: behaviour only, and says why
    assert broken.model_version is None and "no usable current model" in broken.note
    assert set(pl.read_parquet(broken.path)["model_version"]) == {"joint-model-z-v1+no-model"}


def test_view_only_items_get_no_ctr_reason_and_sampled_negatives_are_no_exposures() -> None:
    """issue 19: on a view-only day the export has no impressions (ctr and its trailing rate null):
    no CTR reason, whatever the views; the one-user concentration still counts real views."""
    items = item_activity().with_columns(
        pl.lit(None, pl.Float64).alias("ctr"), pl.lit(None, pl.Float64).alias("ctr_trailing_7d")
    )
    flagged = dict(zip(*score_items(items, top_n=10).select("entity_id", "reasons"), strict=True))
    assert "CTR" not in " ".join(flagged.values()) and "broken tracking" not in " ".join(flagged.values())
    assert "from one user" in flagged["spam"]

    samples = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u1", "u2", "u2"],
            "item_id": ["a", "b", "c", "a", "d"],
            "exposure": ["view", "sampled", "sampled", "implied", "sampled"],
            "click": [1, 0, 0, 1, 0],
        }
    )
    real, silent = real_exposures(samples)
    assert real["item_id"].to_list() == ["a", "a"] and silent == ("click",)
    shown, none = real_exposures(samples.with_columns(pl.lit("impression").alias("exposure")))
    assert shown.height == samples.height and none == ()
    untold, kept = real_exposures(samples.drop("exposure"))
    assert untold.equals(samples.drop("exposure")) and kept == ()
