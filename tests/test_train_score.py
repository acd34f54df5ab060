"""Training, registry and scoring on a small synthetic training window with a learnable signal."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from mtl_model.config import Settings, load_settings
from mtl_model.learn.baselines import popularity_scores, truth_paths, truth_probabilities
from mtl_model.learn.evaluate import METRICS_SCHEMA
from mtl_model.learn.fit import EpochInfo, planned_epochs
from mtl_model.learn.networks import predict_proba
from mtl_model.learn.options import (
    esmm_enabled,
    model_kwargs,
    options_fingerprint,
    task_weights,
)
from mtl_model.learn.registry import CURRENT_FILE, METRICS_FILE, MODEL_FILE, load_current
from mtl_model.learn.train import checkpoint_dir_for, train
from mtl_model.outputs.score import RECOMMENDATIONS_SCHEMA, score

DS = date(2024, 3, 7)
TASKS = ("click", "cart", "purchase")
SCENE_LAST = ("user_id", "item_id", "category_id", "scene")  # the encoders' categorical columns


def make_samples(
    ds: date, n_days: int = 7, n_users: int = 150, n_items: int = 200, per_day: int = 24, seed: int = 0
):
    """Exposures where the click probability follows a user x category affinity plus item quality."""
    rng = np.random.default_rng(seed)
    n_cats = 6
    item_cat = rng.integers(0, n_cats, n_items)
    item_quality = rng.normal(0.0, 0.7, n_items)
    item_price = rng.lognormal(3.0, 1.0, n_items)
    affinity = rng.normal(0.0, 1.2, (n_users, n_cats))
    n = n_days * n_users * per_day
    day = np.repeat(np.arange(n_days), n_users * per_day)
    user = np.tile(np.repeat(np.arange(n_users), per_day), n_days)
    item = rng.integers(0, n_items, n)
    search = rng.random(n) < 0.4
    position = rng.integers(1, 21, n)
    logit = -1.0 + 1.5 * affinity[user, item_cat[item]] + item_quality[item] - 0.04 * position + 0.3 * search
    click = rng.random(n) < 1 / (1 + np.exp(-logit))
    cart = click & (rng.random(n) < 1 / (1 + np.exp(1.0 - affinity[user, item_cat[item]])))
    purchase = cart & (rng.random(n) < 0.5)
    category = np.array([f"c{c}" for c in range(n_cats)], dtype=object)[item_cat[item]]
    category[rng.random(n) < 0.02] = None
    price = item_price[item]
    return pl.DataFrame(
        {
            "ds": [ds - timedelta(days=int(n_days - 1 - d)) for d in day],
            "user_id": [f"u{u}" for u in user],
            "item_id": [f"i{i}" for i in item],
            "category_id": category,
            "scene": np.where(search, "search", "home"),
            "position": pl.Series(position, dtype=pl.Int32),
            "price": pl.Series(price).set(pl.Series(rng.random(n) < 0.05), None),
            "click": pl.Series(click.astype(np.int8)),
            "cart": pl.Series(cart.astype(np.int8)),
            "purchase": pl.Series(purchase.astype(np.int8)),
            "extra_column": np.zeros(n),
        },
        schema_overrides={"ds": pl.Date, "category_id": pl.String},
    )


def make_candidates(samples: pl.DataFrame) -> pl.DataFrame:
    items = samples.select("item_id", "category_id", "price").unique("item_id").sort("item_id").head(40)
    users = pl.DataFrame({"user_id": ["u0", "u1", "u2", "brand_new_user"]})
    cands = users.join(items, how="cross").join(pl.DataFrame({"scene": ["home", "search"]}), how="cross")
    new_item = pl.DataFrame(
        {"user_id": ["u0"], "item_id": ["brand_new_item"], "category_id": [None], "price": [5.0]}
    )
    new_item = new_item.with_columns(pl.lit("home").alias("scene"))
    return pl.concat([cands, new_item], how="diagonal_relaxed").with_columns(
        pl.lit(None, pl.Int32).alias("position")
    )


def write_inputs(settings: Settings, samples: pl.DataFrame) -> None:
    folder = settings.export_dir(DS)
    folder.mkdir(parents=True, exist_ok=True)
    samples.write_parquet(folder / "samples.parquet")
    make_candidates(samples).write_parquet(folder / "candidates.parquet")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture(scope="module")
def samples() -> pl.DataFrame:
    return make_samples(DS)


def settings_for(home: Path, **kw) -> Settings:
    """Small fits of exactly ``epochs`` epochs (``min_steps=0``: these tests count the epochs)."""
    base = dict(home=home, epochs=2, batch_size=256, tasks=TASKS, seed=7, hidden_dims=(64, 32), min_steps=0)
    return Settings(**{**base, **kw})


def quick(home: Path, **kw) -> Settings:
    """Settings for tests that do not look at the baselines (they train one extra model per task)."""
    return settings_for(home, **{"baselines": False, **kw})


def derive(settings: Settings, **changes) -> Settings:
    """``settings`` with ``changes`` (Settings is frozen)."""
    return settings.model_copy(update=changes)


def weights_of(settings: Settings, version: str) -> dict[str, torch.Tensor]:
    return torch.load(settings.models_dir / version / MODEL_FILE, weights_only=True)


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(samples: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory):
    """The default options (from the settings): shared-bottom, sparse embeddings, baselines on."""
    settings = settings_for(tmp_path_factory.mktemp("home"))
    write_inputs(settings, samples)
    return settings, train(settings, DS)


def samples_per_day() -> int:
    return 150 * 24


def test_train_learns_signal_and_writes_metrics(trained) -> None:
    settings, result = trained
    assert result.promoted and result.reason == "no current model"
    assert result.n_valid + result.n_test == samples_per_day() and result.n_train == 6 * samples_per_day()
    assert 0.35 * samples_per_day() < result.n_test < 0.65 * samples_per_day()  # test_fraction 0.5 of users
    assert result.metrics["click"]["auc"] > 0.65
    assert result.metrics["cart"]["auc"] > 0.6
    for task in TASKS:
        assert 0 < result.metrics[task]["logloss"] < 1
        assert 0.5 < result.metrics[task]["gauc"] < 1
    df = pl.read_parquet(result.metrics_path)
    assert df.schema == pl.Schema(METRICS_SCHEMA)
    assert set(df["split"]) == {"validation", "test"} and set(df["model_version"]) == {result.version}
    assert set(df["task"]) == {*TASKS, "all"}
    assert df.select("split", "task", "metric").is_duplicated().sum() == 0
    got = {(r["task"], r["metric"]): r["value"] for r in df.filter(split="validation").iter_rows(named=True)}
    test = {(r["task"], r["metric"]): r["value"] for r in df.filter(split="test").iter_rows(named=True)}
    assert test[("click", "auc")] == result.test_metrics["click"]["auc"] > 0.65  # the night's figure
    assert test[("all", "n_test")] == result.n_test and ("all", "promoted") not in test
    for task in TASKS:  # every AUC carries its class counts and standard error
        n_pos, n_neg, se = (test[(task, k)] for k in ("n_pos", "n_neg", "auc_se"))
        assert n_pos + n_neg == result.n_test and 0 < se < 0.1
        assert got[(task, "n_pos")] + got[(task, "n_neg")] == result.n_valid
        assert 0 < got[(task, "auc_se_single_task")] < 0.1 and (task, "n_pos_single_task") not in got
    assert not any(metric.endswith("_views") for _, metric in got)  # no exposure column: no views rows
    assert got[("click", "auc")] == result.metrics["click"]["auc"]
    assert got[("all", "n_train")] == result.n_train and got[("all", "n_valid")] == result.n_valid
    assert ("all", "samples_per_s") not in got and result.samples_per_s > 0  # speed is not a model metric
    assert {("purchase", "positive_rate"), ("cart", "logloss"), ("click", "gauc")} <= set(got)
    # the references: metric names with a suffix, the main model's version
    for name in ("popularity", "single_task"):
        for task in TASKS:
            assert {(task, f"auc_{name}"), (task, f"gauc_{name}"), (task, f"logloss_{name}")} <= set(got)
        assert ("all", f"mean_auc_{name}") in got
    assert not any(metric.endswith("_truth") for _, metric in got)  # no simulator truth here
    assert got[("click", "auc")] > got[("click", "auc_popularity")]  # users' tastes beat item popularity
    assert got[("click", "auc_single_task")] > 0.65
    assert result.baselines["popularity"]["click"]["auc"] == got[("click", "auc_popularity")]
    assert 1 <= got[("all", "best_epoch")] <= got[("all", "epochs_trained")] <= settings.epochs


def test_registry_layout_and_rerun_overwrites_same_version(trained) -> None:
    settings, first = trained
    folder = settings.models_dir / first.version
    assert {p.name for p in folder.iterdir()} == {"model.pt", "encoders.json", "config.json", "metrics.json"}
    config = json.loads((folder / "config.json").read_text())
    assert config["tasks"] == list(TASKS) and config["architecture"] == "shared_bottom"
    assert config["train_end"] == "2024-03-06" and config["validation_day"] == "2024-03-07"
    assert config["loss_weighting"]["method"] == "fixed" and config["loss_weighting"]["weights"] == [1, 1, 1]
    assert config["loss_weighting"]["class_balance"] == "none" and config["sparse_embeddings"] is True
    assert config["model"] == {"esmm": False, "scene_index": 3, "scene_towers": False}
    state = torch.load(folder / MODEL_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert config["parameter_layout"] == 2 and "embedding.weight" in state  # one stacked table

    again = train(quick(settings.home), DS)  # baselines do not change the model: same version
    assert again.version == first.version and again.promoted
    assert "re-run" in again.reason
    assert (settings.models_dir / CURRENT_FILE).read_text().strip() == first.version
    assert [p.name for p in settings.models_dir.iterdir() if p.name.startswith(".")] == []  # no checkpoints
    model, _, version = load_current(settings)
    assert version == first.version and model.tasks == TASKS


def test_same_seed_gives_identical_weights_and_metrics(samples: pl.DataFrame, tmp_path: Path) -> None:
    mmoe = {"epochs": 1, "architecture": "mmoe"}
    a, b = (quick(tmp_path / x, **mmoe, loss_weighting="gradnorm") for x in "ab")
    write_inputs(a, samples)
    write_inputs(b, samples)
    ra, rb = train(a, DS), train(b, DS)
    assert ra.version == rb.version
    assert ra.metrics == rb.metrics
    assert same_weights(weights_of(a, ra.version), weights_of(b, rb.version))
    assert pl.read_parquet(ra.metrics_path).equals(pl.read_parquet(rb.metrics_path))
    c = quick(tmp_path / "c", **mmoe, loss_weighting="gradnorm", seed=8)
    write_inputs(c, samples)
    assert train(c, DS).version != ra.version
    assert train(quick(a.home, **mmoe), DS).version != ra.version  # the weighting is part of the version


def test_pcgrad_trains_reproducibly_and_is_recorded(samples: pl.DataFrame, tmp_path: Path) -> None:
    ple = {"epochs": 2, "architecture": "ple", "patience": 0}
    a, b = (quick(tmp_path / x, **ple, loss_weighting="pcgrad") for x in "ab")
    write_inputs(a, samples)
    write_inputs(b, samples)
    ra, rb = train(a, DS), train(b, DS)
    assert ra.metrics["click"]["auc"] > 0.65 and ra.metrics["cart"]["auc"] > 0.6
    assert same_weights(weights_of(a, ra.version), weights_of(b, rb.version))
    config = json.loads((a.models_dir / ra.version / "config.json").read_text())
    assert config["options"]["loss_weighting"] == "pcgrad"
    weighting = config["loss_weighting"]
    assert weighting["method"] == "pcgrad" and weighting["weights"] == [1.0, 1.0, 1.0]
    steps = 2 * math.ceil(6 * samples_per_day() / 256)
    assert weighting["steps"] == steps
    rates = weighting["conflict_rate"]  # share of steps in which two tasks' shared gradients conflict
    assert len(rates) == 3 and all(0.0 <= r <= 1.0 for row in rates for r in row)
    assert rates[0][1] == rates[1][0] and rates[0][0] == 0.0
    assert max(max(row) for row in rates) > 0  # some steps had conflicting gradients: projections ran
    assert train(quick(a.home, **ple), DS).version != ra.version  # the weighting is part of the version


@pytest.mark.parametrize(
    ("architecture", "options"),
    [
        ("mmoe", {}),  # ESMM on by default, sparse embeddings
        (
            "ple",
            {"scene_towers": True, "max_vocab": 120, "hash_buckets": 16, "loss_weighting": "uncertainty"},
        ),
        ("shared_bottom", {"sparse_embeddings": False, "class_balance": "focal"}),  # dense Adam
    ],
    ids=["mmoe-esmm-sparse", "ple-esmm-scene_towers-hashing", "shared_bottom-dense"],
)
def test_architectures_learn_and_score_unseen_ids(
    samples: pl.DataFrame, tmp_path: Path, architecture: str, options: dict
) -> None:
    settings = quick(tmp_path, architecture=architecture, **options)
    write_inputs(settings, samples)
    result = train(settings, DS)
    assert result.metrics["click"]["auc"] > 0.65
    assert result.metrics["cart"]["auc"] > 0.6
    config = json.loads((settings.models_dir / result.version / "config.json").read_text())
    assert config["architecture"] == architecture
    assert config["model"]["esmm"] == (architecture != "shared_bottom")
    assert config["sparse_embeddings"] == settings.sparse_embeddings
    assert config["loss_weighting"]["method"] == settings.loss_weighting
    if settings.max_vocab:
        assert config["hashed_features"] == {"user_id": 16, "item_id": 16}
    recs = pl.read_parquet(score(derive(settings, top_k=1000), DS))
    assert recs["score"].is_finite().all() and recs["p_click"].is_between(0, 1).all()
    assert {"brand_new_user", "u0"} <= set(recs["user_id"])
    assert "brand_new_item" in recs.filter(user_id="u0")["item_id"].to_list()
    if config["model"]["esmm"]:  # the published purchase probability is the CTCVR
        assert (recs["p_purchase"] <= recs["p_click"] + 1e-9).all()
        assert (recs["p_cart"] <= recs["p_click"] + 1e-9).all()


@pytest.mark.parametrize("weighting", ["gradnorm", "pcgrad"])  # both keep state: optimizer / RNG
def test_resume_after_crash_gives_the_same_weights(
    samples: pl.DataFrame, tmp_path: Path, weighting: str
) -> None:
    a, b = (
        quick(tmp_path / x, architecture="mmoe", epochs=3, loss_weighting=weighting, patience=0) for x in "ab"
    )
    write_inputs(a, samples)
    write_inputs(b, samples)
    straight = train(a, DS)
    assert straight.epochs_trained == 3 and straight.resumed_from_epoch == 0

    class Crash(RuntimeError):
        pass

    def crash_after_first_epoch(info: EpochInfo) -> None:
        if info.epoch == 1:
            raise Crash("worker lost")

    with pytest.raises(Crash):
        train(b, DS, callbacks=[crash_after_first_epoch])
    ckpt_dir = checkpoint_dir_for(b, straight.version)
    assert (ckpt_dir / "checkpoint.pt").exists() and not (b.models_dir / straight.version).exists()

    seen: list[int] = []
    resumed = train(b, DS, callbacks=[lambda info: seen.append(info.epoch)])
    assert seen == [2, 3] and resumed.resumed_from_epoch == 1  # epoch 1 was not trained again
    assert resumed.version == straight.version
    assert same_weights(weights_of(a, straight.version), weights_of(b, resumed.version))
    assert resumed.metrics == straight.metrics
    assert pl.read_parquet(resumed.metrics_path).equals(pl.read_parquet(straight.metrics_path))
    assert not ckpt_dir.exists()
    configs = [json.loads((s.models_dir / straight.version / "config.json").read_text()) for s in (a, b)]
    assert configs[0]["loss_weighting"] == configs[1]["loss_weighting"]  # e.g. PCGrad's conflict counts


def test_early_stopping_keeps_the_best_epoch(samples: pl.DataFrame, tmp_path: Path) -> None:
    # a learning rate of 1e-30 (0 is not a valid setting) leaves every float32 weight as it was: every
    # epoch scores the same, so the first stays best and patience runs out
    settings = quick(tmp_path, epochs=6, learning_rate=1e-30, patience=2, sparse_embeddings=False)
    write_inputs(settings, samples)
    infos: list[EpochInfo] = []
    result = train(settings, DS, callbacks=[infos.append])
    assert [i.epoch for i in infos] == [1, 2, 3] and [i.stop for i in infos] == [False, False, True]
    assert result.epochs_trained == 3 and result.best_epoch == 1
    got = pl.read_parquet(result.metrics_path).filter(task="all")
    assert dict(zip(got["metric"], got["value"], strict=True))["epochs_trained"] == 3


def test_min_steps_gives_a_small_window_more_epochs(samples: pl.DataFrame, tmp_path: Path) -> None:
    """``min_steps``: a window of few batches runs more than ``epochs`` (early stopping still applies),
    a large one exactly ``epochs``; the option enters the version name only when set."""
    settings = quick(tmp_path, epochs=1, min_steps=200, patience=0)
    write_inputs(settings, samples)
    result = train(settings, DS)
    steps = math.ceil(result.n_train / settings.batch_size)
    planned = planned_epochs(settings, result.n_train)
    assert result.epochs_trained == planned == math.ceil(200 / steps) > 1
    assert planned_epochs(settings.replace(min_steps=0), result.n_train) == 1
    assert Settings().min_steps == 200  # the default (docs/models.md: chosen on the REES46 export)
    assert planned_epochs(settings, 200 * settings.batch_size) == 1  # 200 steps in one epoch already
    assert "min_steps" not in options_fingerprint(settings)  # the default: older version names stay
    assert options_fingerprint(settings.replace(min_steps=0))["min_steps"] == 0


def test_worse_model_is_not_promoted_on_the_same_validation_day(
    samples: pl.DataFrame, tmp_path: Path
) -> None:
    settings = quick(tmp_path)
    write_inputs(settings, samples)
    first = train(settings, DS)

    weak = quick(tmp_path, epochs=1, learning_rate=1e-5, seed=123)  # barely trained
    second = train(weak, DS)
    assert second.version != first.version and not second.promoted
    assert "current model re-evaluated on the validation day 2024-03-07" in second.reason
    re_evaluated = float(second.reason.split("current ")[1].split(" ")[0])
    assert re_evaluated == pytest.approx(first.mean_auc, abs=6e-5)  # same rows, same model: same AUC
    assert (settings.models_dir / CURRENT_FILE).read_text().strip() == first.version
    assert (settings.models_dir / second.version / MODEL_FILE).exists()
    promoted = pl.read_parquet(second.metrics_path).filter(metric="promoted")["value"].to_list()
    assert promoted == [0.0]

    # a current model that cannot be re-evaluated: its stored metrics are compared instead
    (settings.models_dir / first.version / MODEL_FILE).write_bytes(b"not a model")
    stored_path = settings.models_dir / first.version / METRICS_FILE
    stored = json.loads(stored_path.read_text())
    for task in stored["tasks"]:
        stored["tasks"][task]["auc"] = 0.99
    stored_path.write_text(json.dumps(stored))
    third = train(quick(tmp_path, epochs=1, seed=5), DS)
    assert not third.promoted
    assert "< current 0.9900" in third.reason and "stored metrics" in third.reason


def test_missing_validation_day_is_a_clear_error(samples: pl.DataFrame, tmp_path: Path) -> None:
    settings = quick(tmp_path)
    write_inputs(settings, samples.filter(pl.col("ds") < DS))
    with pytest.raises(ValueError, match=r"ds=2024-03-07.*n_train=21600, n_valid=0"):
        train(settings, DS)


def test_options_come_from_settings_and_environment_strings(monkeypatch: pytest.MonkeyPatch) -> None:
    environment = {
        "ESMM": "false",
        "TASK_WEIGHTS": "1,2,0.5",
        "SPARSE_EMBEDDINGS": "0",
        "PATIENCE": "3",
        "LOSS_WEIGHTING": "uncertainty",
    }
    for name, value in environment.items():
        monkeypatch.setenv(f"TANDEM_{name}", value)
    settings = load_settings()
    assert esmm_enabled(settings) is False and task_weights(settings) == (1.0, 2.0, 0.5)
    assert settings.sparse_embeddings is False and settings.loss_weighting == "uncertainty"
    assert settings.patience == 3
    assert model_kwargs(Settings(architecture="mmoe"), SCENE_LAST)["esmm"] is True  # esmm "auto"
    assert model_kwargs(Settings(architecture="shared_bottom"), SCENE_LAST)["esmm"] is False
    assert model_kwargs(Settings(architecture="mmoe", esmm="false"), SCENE_LAST)["esmm"] is False
    # nothing set: the defaults, as earlier versions named them (the version name hashes this)
    want = {"esmm": False, "scene_towers": False, "n_experts": 4, "ple_levels": 2, "ple_task_experts": 1}
    want |= {"ple_shared_experts": 2, "loss_weighting": "fixed", "task_weights": [], "gradnorm_alpha": 1.5}
    want |= {"class_balance": "none", "focal_gamma": 2.0, "sparse_embeddings": True, "max_vocab": 0}
    want |= {"hash_buckets": 4096, "log_counts": True, "patience": 2, "bf16": True}
    want |= {"test_fraction": 0.5}  # new: half the day's users are held out from the epoch's choice
    want |= {"output_bias": "base_rate"}  # new: the output biases start at each task's base rate
    want |= {"plateau": "hold_embeddings", "plateau_lr_factor": 0.1}  # new: back to the best on a plateau
    assert options_fingerprint(Settings()) == want
    assert options_fingerprint(Settings(lr_schedule="cosine"))["lr_schedule"] == "cosine"  # when set
    # how a model is trained or reported is not part of it
    unfingerprinted = Settings(checkpoints=False, threads=1, baselines=False, checkpoint_dir=Path("/tmp/c"))
    assert options_fingerprint(unfingerprinted) == options_fingerprint(Settings())


def test_score_writes_top_k_per_user(trained) -> None:
    settings, result = trained
    path = score(settings, DS)
    recs = pl.read_parquet(path)
    assert recs.schema == pl.Schema(RECOMMENDATIONS_SCHEMA)
    assert set(recs["user_id"]) == {"u0", "u1", "u2", "brand_new_user"}
    assert set(recs["model_version"]) == {result.version} and set(recs["ds"]) == {DS}
    k = settings.top_k
    for _, group in recs.group_by("user_id"):
        assert group["rank"].sort().to_list() == list(range(1, k + 1))
        assert group["item_id"].n_unique() == k
        by_rank = group.sort("rank")
        assert by_rank["score"].to_list() == sorted(by_rank["score"].to_list(), reverse=True)
    expected = recs["p_click"] * recs["p_purchase"]
    assert (recs["score"] - expected).abs().max() < 1e-12
    assert recs.select(pl.col("p_click", "p_cart", "p_purchase").is_between(0, 1).all()).row(0) == (True,) * 3
    assert score(settings, DS) == path and pl.read_parquet(path).equals(recs)  # deterministic rerun


def test_score_covers_unseen_users_and_items(trained) -> None:
    settings, _ = trained
    everything = pl.read_parquet(score(derive(settings, top_k=1000, max_per_category=0), DS))
    u0 = everything.filter(user_id="u0")
    assert u0.height == 41 and "brand_new_item" in u0["item_id"].to_list()  # 40 items + the unseen one
    assert everything.filter(user_id="brand_new_user").height == 40  # home/search duplicates collapsed
    assert everything["score"].is_finite().all()


def test_candidates_are_scored_in_the_scene_of_the_list(trained) -> None:
    """By default every candidate is scored as a home-feed item (a search candidate has no query);
    with ``recommend_scene`` empty, each keeps its scene and the pair keeps its best-scoring row."""
    settings, _ = trained
    home = pl.read_parquet(score(derive(settings, top_k=1000, max_per_category=0), DS))
    assert set(home["scene"]) == {"home"}
    own = pl.read_parquet(score(derive(settings, top_k=1000, max_per_category=0, recommend_scene=""), DS))
    assert set(own["scene"]) == {"home", "search"}
    pairs = ["user_id", "item_id"]
    both = home.join(own, on=pairs, suffix="_own")
    assert both.height == home.height == own.height
    # a pair kept from its search row scores differently from the same pair scored as home
    search = both.filter(pl.col("scene_own") == "search")
    assert search.height > 0 and (search["p_click"] != search["p_click_own"]).any()
    home_rows = both.filter(pl.col("scene_own") == "home")
    assert (home_rows["p_click"] - home_rows["p_click_own"]).abs().max() < 1e-12


def test_score_in_chunks_equals_one_pass_and_handles_no_candidates(trained, monkeypatch) -> None:
    """Scoring reads the candidates a chunk at a time (memory): the lists are those of one pass, also
    when a user's candidates straddle two chunks; a day without candidates gives an empty table."""
    from mtl_model.outputs import score as score_module

    settings, _ = trained
    monkeypatch.setattr(score_module, "PREDICT_BATCH", 7)
    monkeypatch.setattr(score_module, "SCORE_CHUNK", 10**9)
    one_pass = pl.read_parquet(score(settings, DS))
    monkeypatch.setattr(score_module, "SCORE_CHUNK", 3 * 7)  # 161 rows → 8 chunks
    chunked = pl.read_parquet(score(settings, DS))
    assert chunked.height == one_pass.height > 0 and chunked.equals(one_pass)
    path = settings.export_dir(DS) / "candidates.parquet"
    saved = pl.read_parquet(path)
    try:
        saved.clear().write_parquet(path)
        empty = pl.read_parquet(score(settings, DS))
        assert empty.height == 0 and empty.schema == pl.Schema(RECOMMENDATIONS_SCHEMA)
    finally:
        saved.write_parquet(path)


def test_score_with_click_only_model(samples: pl.DataFrame, tmp_path: Path) -> None:
    settings = quick(tmp_path, epochs=1, tasks=("click",), top_k=3, architecture="mmoe")
    write_inputs(settings, samples)
    train(settings, DS)
    recs = pl.read_parquet(score(settings, DS))
    assert recs.height == 4 * 3
    assert recs["p_cart"].is_null().all() and recs["p_purchase"].is_null().all()
    assert (recs["score"] == recs["p_click"]).all()
    assert not math.isnan(recs["score"].sum())


def test_popularity_baseline_is_smoothed_towards_the_global_rate() -> None:
    train_df = pl.DataFrame(
        {"item_id": ["a"] * 10 + ["b"] * 30, "click": [1] * 5 + [0] * 5 + [1] * 3 + [0] * 27}
    )
    valid_df = pl.DataFrame({"item_id": ["a", "b", "new"]})
    got = popularity_scores(train_df, valid_df, ("click",), prior_strength=20.0)["click"].to_list()
    rate = 8 / 40
    assert got == pytest.approx([(5 + 20 * rate) / 30, (3 + 20 * rate) / 50, rate])


def test_truth_ceiling_joins_through_the_landing_events(tmp_path: Path) -> None:
    """Samples are keyed by exposure_id = md5(session|user|item|scene), the truth by event_id."""
    settings = Settings(home=tmp_path)
    assert truth_paths(settings.home, settings.landing_dir, DS) is None  # nothing there: skipped
    n = 40
    events = pl.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(n)] + ["e-click"],
            "event_time": list(range(n)) + [99],
            "session_id": [f"s{i // 5}" for i in range(n)] + ["s0"],
            "user_id": [f"u{i % 7}" for i in range(n)] + ["u0"],
            "item_id": [f"i{i}" for i in range(n)] + ["i0"],
            "event_type": ["impression"] * n + ["click"],
            "scene": [None if i == 3 else "home" for i in range(n)] + ["home"],
        }
    )
    truth = pl.DataFrame({"event_id": [f"e{i}" for i in range(n)], "p_click": np.linspace(0.01, 0.9, n)})
    (tmp_path / "landing/events" / f"ds={DS}").mkdir(parents=True)
    events.write_parquet(tmp_path / "landing/events" / f"ds={DS}" / "part-0.parquet")
    (tmp_path / "truth/exposures" / f"ds={DS}").mkdir(parents=True)
    truth.write_parquet(tmp_path / "truth/exposures" / f"ds={DS}" / "part-0.parquet")
    exposure = [
        hashlib.md5(
            f"{r['session_id']}|{r['user_id']}|{r['item_id']}|{r['scene'] or 'unknown'}".encode()
        ).hexdigest()
        for r in events.head(n).iter_rows(named=True)
    ]
    valid = pl.DataFrame({"exposure_id": exposure[::-1], "user_id": ["x"] * n})  # another order than events
    paths = truth_paths(settings.home, settings.landing_dir, DS)
    assert paths is not None
    got = truth_probabilities(*paths, valid, ("click", "cart"))
    assert set(got) == {"click"}  # no p_cart in this truth file
    assert got["click"].to_numpy() == pytest.approx(truth["p_click"].to_numpy()[::-1])
    partial = pl.concat([valid, pl.DataFrame({"exposure_id": ["unknown-exposure"], "user_id": ["x"]})])
    assert truth_probabilities(*paths, partial, ("click",)) is None  # under 99 % matched: skipped
    assert truth_probabilities(*paths, valid.drop("exposure_id"), ("click",)) is None


DDP_SCRIPT = """
import json, sys
from datetime import date
import torch
torch.set_num_threads(1)
from mtl_model.config import Settings
from mtl_model.learn.distributed import distributed_world
from mtl_model.learn.train import train
settings = Settings(
    home=sys.argv[1], epochs=2, batch_size=256, seed=7, hidden_dims=(64, 32), architecture="mmoe",
    baselines=False, loss_weighting="uncertainty", min_steps=0,
)
result = train(settings, date.fromisoformat(sys.argv[2]))
rank, world = distributed_world()
print(json.dumps({"rank": rank, "world": world, "version": result.version, "promoted": result.promoted,
                  "auc": {t: m["auc"] for t, m in result.metrics.items()}, "epochs": result.epochs_trained}))
torch.distributed.barrier()
torch.distributed.destroy_process_group()
"""


@pytest.mark.skipif(not torch.distributed.is_available(), reason="needs torch.distributed (gloo)")
def test_ddp_two_cpu_processes_train_one_model(samples: pl.DataFrame, tmp_path: Path) -> None:
    home = tmp_path / "ddp"
    settings = settings_for(home, architecture="mmoe")
    write_inputs(settings, samples)
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
    ]
    command += [str(home), str(DS)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if run.returncode != 0 and re.search(r"exitcode: -(?:6|11)\b", run.stderr):
        # seen on the loaded 2-core CI machine: a gloo worker killed by SIGSEGV mid-backward (once in
        # ~10 runs), or by SIGABRT on "malloc(): unaligned tcache chunk detected" (2026-12-02, twice in
        # one make test, not reproduced in 7 runs alone). One retry for a signal death only; any other
        # failure, or a second crash, fails.
        run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    lines = [json.loads(x) for x in run.stdout.splitlines() if x.startswith("{")]
    assert sorted(x["rank"] for x in lines) == [0, 1] and {x["world"] for x in lines} == {2}
    leader = next(x for x in lines if x["rank"] == 0)
    assert leader["promoted"] and leader["epochs"] == 2
    assert (settings.models_dir / leader["version"] / MODEL_FILE).exists()
    assert leader["auc"]["click"] > 0.65
    # the same job in one process: same version, and (up to float summation order) the same model
    alone = quick(tmp_path / "single", architecture="mmoe", loss_weighting="uncertainty")
    write_inputs(alone, samples)
    single = train(alone, DS)
    assert single.version == leader["version"]
    for task, value in single.metrics.items():
        assert leader["auc"][task] == pytest.approx(value["auc"], abs=0.01)


@pytest.mark.cuda
@pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()),
    reason="needs a CUDA device with bf16 (no GPU here: bf16 autocast runs on CUDA only)",
)
def test_cuda_bf16_training_matches_cpu_fp32(samples: pl.DataFrame, tmp_path: Path) -> None:
    """The same data and settings trained on CPU in float32 and on CUDA under bf16 autocast: the same
    version, a click AUC within 0.01 of the CPU one, and above the popularity baseline's."""
    cpu = quick(tmp_path / "cpu", architecture="mmoe", device="cpu", bf16=True)
    cuda = settings_for(tmp_path / "cuda", architecture="mmoe", device="cuda", bf16=True)  # + baselines
    write_inputs(cpu, samples)
    write_inputs(cuda, samples)
    on_cpu, on_cuda = train(cpu, DS), train(cuda, DS)
    assert on_cpu.device == "cpu" and on_cuda.device == "cuda"
    assert on_cuda.version == on_cpu.version  # the device is no part of the model's identity
    click_cpu, click_cuda = on_cpu.metrics["click"]["auc"], on_cuda.metrics["click"]["auc"]
    assert click_cuda == pytest.approx(click_cpu, abs=0.01)
    assert click_cuda > on_cuda.baselines["popularity"]["click"]["auc"]


def test_pal_trains_registers_and_scores_candidates_by_relevance(
    samples: pl.DataFrame, tmp_path: Path
) -> None:
    """position_bias=pal: the position is a ProbSeen input only (config.json says so); the nightly
    model loads from the registry and scores the candidates, which have no position."""
    settings = quick(tmp_path, position_bias="pal")
    write_inputs(settings, samples)
    result = train(settings, DS)
    config = json.loads((settings.models_dir / result.version / "config.json").read_text())
    assert config["model"]["bias_index"] == 4 and "position" not in config["numeric_features"]
    assert config["options"]["position_bias"] == "pal" and result.metrics["click"]["auc"] > 0.6
    recs = pl.read_parquet(score(settings, DS))
    assert recs.height > 0 and recs["p_click"].is_between(0, 1).all()
    model, encoders, _ = load_current(settings)
    cands = make_candidates(samples)
    cat, num = encoders.encode(cands)
    shown = encoders.encode(cands.with_columns(pl.lit(3, pl.Int32).alias("position")))[0]
    assert torch.equal(cat[:, :4], shown[:, :4]) and bool((shown[:, 4] != 0).all())
    assert not torch.allclose(
        predict_proba(model, shown, num)["click"], predict_proba(model, cat, num)["click"]
    )


def test_a_backfilled_older_day_is_judged_and_scored_by_the_registry_as_of_that_day(
    samples: pl.DataFrame, tmp_path: Path
) -> None:
    """Night DS runs first, then the older night DS-1 (a backfill): DS-1 is compared with no model (none
    existed as of DS-1) and scored by its own model, never by DS's; CURRENT stays with the newest night."""
    settings = quick(tmp_path)
    write_inputs(settings, samples)
    later = train(settings, DS)
    earlier_day = DS - timedelta(days=1)
    folder = settings.export_dir(earlier_day)
    folder.mkdir(parents=True)
    samples.filter(pl.col("ds") <= earlier_day).write_parquet(folder / "samples.parquet")
    make_candidates(samples).write_parquet(folder / "candidates.parquet")
    earlier = train(settings, earlier_day)
    assert earlier.version != later.version and earlier.reason == "no current model"
    assert (settings.models_dir / CURRENT_FILE).read_text().strip() == later.version
    assert set(pl.read_parquet(score(settings, earlier_day))["model_version"]) == {earlier.version}
    assert set(pl.read_parquet(score(settings, DS))["model_version"]) == {later.version}
    again = train(settings, DS)  # a rerun of DS is judged against what served DS: itself
    assert again.version == later.version and again.promoted


def test_metrics_with_the_position_left_out_are_those_of_the_candidates_scoring(trained) -> None:
    """Rows with a logged position get ``*_no_position`` rows on each split: the registered model (and
    the references) scoring the same rows with the position null, as every candidate is scored."""
    from mtl_model.learn.metrics import auc, gauc
    from mtl_model.learn.registry import load_version
    from mtl_model.learn.samples import read_split, split_test

    settings, result = trained  # the night's result as trained (other tests rerun DS in this home)
    model, encoders, _ = load_version(settings, result.version)
    rows = split_test(read_split(settings, DS)[1], settings.test_fraction)[1]
    logged = predict_proba(model, *encoders.encode(rows))
    unplaced = predict_proba(model, *encoders.encode(rows.with_columns(pl.lit(None).alias("position"))))
    users = rows["user_id"].to_numpy()
    single, popularity = (result.test_baselines[k] for k in ("single_task", "popularity"))
    for task in TASKS:
        y, m = rows[task].to_numpy(), result.test_metrics[task]
        assert m["auc_no_position"] == pytest.approx(auc(y, unplaced[task].numpy()), abs=1e-12)
        assert m["gauc_no_position"] == pytest.approx(gauc(y, unplaced[task].numpy(), users))
        assert m["auc"] == pytest.approx(auc(y, logged[task].numpy()), abs=1e-12)
        assert m["auc_no_position"] != m["auc"]  # the position is an input here
        assert 0.5 < single[task]["auc_no_position"] < 1
        # the popularity rates never read the position; the truth has no such measure
        assert popularity[task]["auc_no_position"] == popularity[task]["auc"]
        assert "n_pos_no_position" not in m and "truth" not in result.test_baselines
    assert result.test_mean_auc != pytest.approx(
        np.mean([result.test_metrics[t]["auc_no_position"] for t in TASKS])
    )


def test_metrics_among_real_views_when_the_samples_tell_them(samples: pl.DataFrame, tmp_path: Path) -> None:
    """With an ``exposure`` column (view-only sources), every split also gets ``*_views`` rows: the
    metrics among real exposures, sampled negatives left out. View-only sources log no position:
    then no ``*_no_position`` rows either (they would repeat the rows')."""
    rng = np.random.default_rng(3)
    sampled = (samples["click"] == 0).to_numpy() & (rng.random(samples.height) < 0.6)
    kinds = np.where(sampled, "sampled", np.where(rng.random(samples.height) < 0.1, "implied", "view"))
    settings = quick(tmp_path, epochs=1)
    unplaced = samples.with_columns(pl.Series("exposure", kinds), pl.lit(None, pl.Int32).alias("position"))
    write_inputs(settings, unplaced)
    result = train(settings, DS)
    df = pl.read_parquet(result.metrics_path)
    for split in ("validation", "test"):
        got = {(r["task"], r["metric"]): r["value"] for r in df.filter(split=split).iter_rows(named=True)}
        assert {("cart", "auc_views"), ("cart", "auc_se_views"), ("all", "mean_auc_views")} <= set(got)
        assert (
            got[("cart", "n_pos_views")] + got[("cart", "n_neg_views")]
            < got[("cart", "n_pos")] + got[("cart", "n_neg")]
        )
    assert (
        result.test_metrics["cart"]["auc_views"]
        == df.filter(split="test", task="cart", metric="auc_views")["value"][0]
    )
    assert not df.filter(pl.col("metric").str.ends_with("_no_position")).height


def _mean_predicted(
    settings: Settings, version: str, shift: float = 1.0
) -> tuple[dict[str, float], dict[str, float]]:
    """(mean predicted probability, positive rate) per task on the whole validation day ``DS``; with
    ``shift`` w < 1 each prediction p is recalibrated as q = p / (p + (1 - p) / w) (He et al. 2014)."""
    from mtl_model.learn.registry import load_version
    from mtl_model.learn.samples import labels as label_tensor
    from mtl_model.learn.samples import read_split

    model, encoders, _ = load_version(settings, version)
    day = read_split(settings, DS)[1]
    probs = predict_proba(model, *encoders.encode(day), device=torch.device("cpu"))
    y = label_tensor(day, TASKS)
    q = {t: p.double() / (p.double() + (1 - p.double()) / shift) for t, p in probs.items()}
    return {t: float(q[t].mean()) for t in TASKS}, {t: float(y[:, i].mean()) for i, t in enumerate(TASKS)}


def test_the_window_read_for_training_keeps_the_rows_and_only_the_columns_it_reads(
    samples: pl.DataFrame, tmp_path: Path
) -> None:
    """read_split with the feature spec reads the training days one at a time and only the columns
    training needs: the same rows in the same order as the whole window's scan, and the same codes."""
    from mtl_model.learn.features import Encoders
    from mtl_model.learn.options import feature_spec
    from mtl_model.learn.samples import SAMPLES_FILE, read_split

    settings = quick(tmp_path / "home")
    exported = samples.with_columns(  # as the export has them: the exposures' ids and kinds
        exposure_id=pl.format("x{}", pl.int_range(pl.len())), exposure=pl.lit("impression")
    )
    write_inputs(settings, exported)
    spec = feature_spec(settings)
    every, day = read_split(settings, DS)
    lean, lean_day = read_split(settings, DS, spec)
    assert lean_day.equals(day) and "exposure_id" in day.columns  # the validation day keeps every column
    unread = {"exposure_id", "exposure"}
    assert unread <= set(every.columns) and not unread & set(lean.columns)
    assert lean.equals(every.select(lean.columns)) and lean.height == samples.filter(pl.col("ds") < DS).height
    whole = pl.read_parquet(settings.export_dir(DS) / SAMPLES_FILE).filter(pl.col("ds").cast(pl.Date) < DS)
    assert lean["user_id"].equals(whole["user_id"])  # the file's order (ds, exposure_id), day after day
    enc = Encoders.fit(lean, spec)
    assert enc == Encoders.fit(every, spec)
    assert all(torch.equal(a, b) for a, b in zip(enc.encode(lean), enc.encode(every), strict=True))


def test_negative_downsampling_keeps_positives_is_seeded_and_never_touches_the_day(
    samples: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mtl_model.learn.samples import negative_weights, read_split

    full = quick(tmp_path / "full")
    write_inputs(full, samples)
    half = derive(full, negative_rate=0.3)
    train_all, day_all = read_split(full, DS)
    train_a, day_a = read_split(half, DS)
    train_b, _ = read_split(half, DS)
    assert train_a.equals(train_b)  # the same rows for the same seed
    assert day_a.equals(day_all)  # the validation day is never down-sampled
    any_label = pl.any_horizontal(pl.col(t) > 0 for t in TASKS)
    assert train_a.filter(any_label).height == train_all.filter(any_label).height  # every positive stays
    negatives, kept = train_all.filter(~any_label).height, train_a.filter(~any_label).height
    assert abs(kept / negatives - 0.3) < 0.02  # ~10k negatives: the hash draws 30 % of them
    other_seed = read_split(derive(half, seed=8), DS)[0]
    assert not other_seed.equals(train_a) and abs(other_seed.height - train_a.height) < 0.05 * train_a.height
    w = negative_weights(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 0, 1]]), 0.25)
    assert w is not None and w.tolist() == [4.0, 1.0, 1.0]
    assert negative_weights(torch.zeros(3, 3), 1.0) is None
    # the rate is part of the model's options (and version) only when it is not 1
    assert "negative_rate" not in options_fingerprint(full)
    assert options_fingerprint(half)["negative_rate"] == 0.3
    # how often the references train and on how many processes: not part of the model
    assert options_fingerprint(derive(full, baselines_every=7, train_nproc=2)) == options_fingerprint(full)
    for name, value in {"NEGATIVE_RATE": "0.3", "BASELINES_EVERY": "7", "TRAIN_NPROC": "2"}.items():
        monkeypatch.setenv(f"TANDEM_{name}", value)
    from_env = load_settings()
    assert (from_env.negative_rate, from_env.baselines_every, from_env.train_nproc) == (0.3, 7, 2)
    with pytest.raises(ValueError, match="negative_rate"):
        Settings(negative_rate=0.0)


def test_downsampled_negatives_stay_calibrated_and_keep_the_auc(
    samples: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """negative_rate=0.25 with its importance weights: the mean prediction on the validation day is
    its positive rate (within 0.04: the same model trained on the same rows without the weights is off
    by more than that for every task, 0.08-0.31 here) and within 0.04 of the model trained on every
    row, whose AUC and log loss it keeps (within 0.03). Which negatives stay is a draw (seed 7 here).
    Over seeds 0-7 and the 3 tasks, with the output biases started at the base rate (the default
    since 2026-12-02), the gap to the positive rate was 0.001-0.035 but 0.049 on seed 5, the gap to
    the full model's mean prediction 0.000-0.035 but 0.039-0.067 on seed 5, the AUC drop up to 0.027 and
    the log-loss rise up to 0.013 (uniform start: 0.002-0.050, 0.002-0.027, 0.026, 0.019). The
    bounds hold that noise of a 2-epoch fit on a 3,600-row day, not the figures of one draw; 4 epochs
    narrowed the gap to the rate (at most 0.031) but widened the AUC drop (up to 0.052)."""
    from mtl_model.learn import train as train_module

    full = quick(tmp_path / "full")
    write_inputs(full, samples)
    sampled = quick(tmp_path / "sampled", negative_rate=0.25)
    write_inputs(sampled, samples)
    r_full, r_sampled = train(full, DS), train(sampled, DS)
    assert r_sampled.version != r_full.version and r_sampled.n_train < 0.8 * r_full.n_train
    config = json.loads((sampled.models_dir / r_sampled.version / "config.json").read_text())
    assert config["options"]["negative_rate"] == 0.25 and config["negative_rate"] == 0.25
    predicted, rate = _mean_predicted(sampled, r_sampled.version)
    predicted_full, _ = _mean_predicted(full, r_full.version)
    for task in TASKS:
        assert abs(predicted[task] - rate[task]) < 0.04, (task, predicted[task], rate[task])
        assert abs(predicted[task] - predicted_full[task]) < 0.04, (task, predicted[task], predicted_full)
        assert r_sampled.metrics[task]["auc"] > r_full.metrics[task]["auc"] - 0.03
        assert r_sampled.metrics[task]["logloss"] < r_full.metrics[task]["logloss"] + 0.03
    # the wrong correction (none): trained on the same kept rows, calibrated to them, not to the day
    wrong = quick(tmp_path / "wrong", negative_rate=0.25)
    write_inputs(wrong, samples)
    monkeypatch.setattr(train_module, "negative_weights", lambda y, r: None)
    r_wrong = train(wrong, DS)
    predicted_wrong, _ = _mean_predicted(wrong, r_wrong.version)
    for task in TASKS:
        assert predicted_wrong[task] - rate[task] > 0.04, (task, predicted_wrong[task], rate[task])
    # the logit shift of that model: right for click (its negatives are all sampled at one rate), not
    # for cart, whose negatives are partly kept clicked rows (measured: 0.294 vs 0.299, 0.093 vs 0.144)
    shifted, _ = _mean_predicted(wrong, r_wrong.version, shift=0.25)
    assert abs(shifted["click"] - rate["click"]) < 0.04
    assert rate["cart"] - shifted["cart"] > 0.04


def test_single_task_baselines_every_nth_night(samples: pl.DataFrame, tmp_path: Path) -> None:
    from mtl_model.learn.train import single_task_tonight

    every = next(n for n in range(2, 9) if DS.toordinal() % n)  # a night that skips
    settings = settings_for(tmp_path / "home", baselines_every=every, epochs=1)
    write_inputs(settings, samples)
    result = train(settings, DS)
    got = pl.read_parquet(result.metrics_path)
    assert got.filter(pl.col("metric").str.ends_with("_single_task")).height == 0
    assert got.filter(pl.col("metric").str.ends_with("_popularity")).height > 0  # popularity stays
    summary = json.loads((settings.models_dir / result.version / "metrics.json").read_text())
    assert summary["single_task_baselines"].startswith(f"skipped: single-task baselines train every {every}")
    assert "single_task" not in result.baselines and "popularity" in result.baselines
    on_night = date.fromordinal(DS.toordinal() + (every - DS.toordinal() % every))
    assert single_task_tonight(settings, on_night) and not single_task_tonight(settings, DS)
    assert on_night.isoformat() in summary["single_task_baselines"]
    assert single_task_tonight(derive(settings, baselines_every=1), DS)
    assert not single_task_tonight(derive(settings, baselines=False), on_night)


def test_popularity_baseline_counts_down_sampled_negatives_by_their_weight() -> None:
    """Item b's 27 non-clicks kept as 9 rows of weight 3: the same smoothed rates as on every row."""
    full = pl.DataFrame({"item_id": ["a"] * 10 + ["b"] * 30, "click": [1] * 5 + [0] * 5 + [1] * 3 + [0] * 27})
    kept = pl.DataFrame(
        {
            "item_id": ["a"] * 10 + ["b"] * 12,
            "click": [1] * 5 + [0] * 5 + [1] * 3 + [0] * 9,
            "sample_weight": [1.0] * 13 + [3.0] * 9,
        }
    )
    valid_df = pl.DataFrame({"item_id": ["a", "b", "new"]})
    want = popularity_scores(full, valid_df, ("click",))["click"].to_list()
    assert popularity_scores(kept, valid_df, ("click",))["click"].to_list() == pytest.approx(want)
    unweighted = popularity_scores(kept.drop("sample_weight"), valid_df, ("click",))["click"].to_list()
    assert unweighted[1] > want[1] + 0.05  # without the weights b looks far more clicked


def test_a_weighted_task_loss_equals_the_loss_on_the_rows_repeated_by_their_weight() -> None:
    from mtl_model.learn.weighting import task_loss

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(64, generator=g), (torch.rand(64, generator=g) < 0.3).float()
    w = torch.where(y == 0, 4.0, 1.0)  # negatives kept at rate 0.25
    repeated = torch.repeat_interleave(torch.arange(64), w.long())
    for mode in ("none", "pos_weight", "focal"):
        got = task_loss(logits, y, mode, 3.0, 2.0, sample_weight=w)
        want = task_loss(logits[repeated], y[repeated], mode, 3.0, 2.0)
        assert got.item() == pytest.approx(want.item(), rel=1e-5), mode
        assert got.item() != pytest.approx(task_loss(logits, y, mode, 3.0, 2.0).item(), rel=1e-2)


def test_scoring_split_by_user_hash_unions_to_the_unsliced_table(trained) -> None:
    """TANDEM_SCORE_PARTS=K: K slices of the users, each scored alone (a mapped task each in the
    DAG), merged, give the unsliced table; every user is in exactly one slice."""
    from mtl_model.outputs.score import merge_parts, part_path

    settings, _ = trained
    whole = pl.read_parquet(score(settings, DS))
    sliced = settings.replace(score_parts=3)
    users = [set(pl.read_parquet(score(sliced, DS, part=k))["user_id"]) for k in range(3)]
    assert set.union(*users) == set(whole["user_id"]) and sum(map(len, users)) == whole["user_id"].n_unique()
    assert sum(1 for u in users if u) >= 2  # the hash really cuts these four users
    with pytest.raises(FileNotFoundError, match="score parts missing"):
        part_path(sliced, DS, 1).unlink() or merge_parts(sliced, DS)
    score(sliced, DS, part=1)
    merged = pl.read_parquet(merge_parts(sliced, DS))
    assert merged.equals(whole)
    assert not any(part_path(sliced, DS, k).exists() for k in range(3))  # slices removed once merged
    with pytest.raises(ValueError, match="part 3 is not one of the 3"):
        score(sliced, DS, part=3)
