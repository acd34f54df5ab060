"""The learned retrieval source: the kernels against the formulas written plainly, and a night with
``retrieval=two_tower`` that scores and publishes the new source's candidates."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import polars as pl
import pytest
import torch

from mtl_model.config import SettingsError, load_settings
from mtl_model.learn.networks.two_tower import in_batch_logq_loss
from mtl_model.learn.retrieval import exact_top_n
from tests.conftest import BUILT_DS, dbt_build, tandem_env, tandem_settings


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("TANDEM_RETRIEVAL", "ann", "'off' or 'two_tower'"),
        ("TANDEM_RETRIEVAL_TOP_N", "0", "greater than or equal to 1"),
        ("TANDEM_RETRIEVAL_TOP_N", "5000", "less than or equal to 2000"),
    ],
)
def test_retrieval_settings_are_validated(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, says: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith(f"{name}={value!r}: ") and says in str(err.value)
    monkeypatch.delenv(name)
    assert load_settings().retrieval == "off"  # the default, chosen in docs/retrieval.md


def test_blocked_top_n_equals_a_plain_loop_over_users() -> None:
    g = torch.Generator().manual_seed(0)
    users, items = torch.randn(37, 8, generator=g), torch.randn(23, 8, generator=g)
    excluded = [(0, 5), (0, 7), (13, 0), (36, 22), (20, 3)]
    rows = torch.tensor([u for u, _ in excluded])
    cols = torch.tensor([i for _, i in excluded])
    scores, index = exact_top_n(users, items, 6, (rows, cols), block=5)  # blocks of 5: 8 blocks, one short
    for u in range(users.shape[0]):
        plain = []
        for i in range(items.shape[0]):
            if (u, i) not in excluded:
                plain.append((sum(float(users[u, d] * items[i, d]) for d in range(8)), i))
        plain.sort(key=lambda pair: -pair[0])
        assert index[u].tolist() == [i for _, i in plain[:6]]
        assert scores[u].tolist() == pytest.approx([s for s, _ in plain[:6]], abs=1e-5)
    everything = exact_top_n(users, items, 23, (rows, cols), block=5)
    assert 5 not in everything[1][0, :21].tolist() and everything[0][0, 21:].isinf().all()  # excluded: last
    assert {5, 7} <= set(exact_top_n(users, items, 23, None, block=5)[1][0].tolist())


def test_in_batch_loss_with_log_q_equals_the_formula_written_plainly() -> None:
    g = torch.Generator().manual_seed(1)
    u = torch.nn.functional.normalize(torch.randn(4, 3, generator=g), dim=1)
    v = torch.nn.functional.normalize(torch.randn(4, 3, generator=g), dim=1)
    item_ids = torch.tensor([10, 11, 10, 12])  # rows 0 and 2 hold the same item: not each other's negative
    q = torch.tensor([0.5, 0.25, 0.5, 0.25])
    tau = 0.1
    total = 0.0
    for i in range(4):

        def s(j: int, i: int = i) -> float:
            dot = sum(float(u[i, d] * v[j, d]) for d in range(3))
            return dot / tau - math.log(float(q[j]))

        negatives = [j for j in range(4) if j == i or int(item_ids[j]) != int(item_ids[i])]
        total += -(s(i) - math.log(sum(math.exp(s(j)) for j in negatives)))
    expected = total / 4
    assert float(in_batch_logq_loss(u, v, q.log(), item_ids, tau)) == pytest.approx(expected, rel=1e-5)
    # the correction matters: the same batch without it gives another loss
    assert float(in_batch_logq_loss(u, v, torch.zeros(4), item_ids, tau)) != pytest.approx(expected, rel=1e-3)


def test_a_night_with_retrieval_scores_and_publishes_the_new_source(
    built_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """export → train (ranker + two-tower) → score → anomalies → publish with retrieval on: the lists
    hold items only the retrieval source offered, no (user, item) twice, and a retrieval row's
    features equal the row dbt builds for the same pair."""
    from mtl_model.learn.registry import RETRIEVAL_CANDIDATES_FILE, retrieval_dir
    from mtl_model.outputs.score import RETRIEVAL_BIT, retrieval_rows
    from mtl_model.pipeline import nightly

    small = {"candidates_popular_per_scene": 5, "candidates_per_category": 3, "candidates_covisit": 5}
    settings = tandem_settings(built_home, retrieval="two_tower", retrieval_top_n=40, **small)
    rebuilt = dbt_build(built_home, BUILT_DS, "--select", "scoring_candidates", settings=settings)
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:]  # fewer dbt candidates than the 80 items
    for name, value in tandem_env(built_home, settings).items():
        monkeypatch.setenv(name, value)
    run_date = str(BUILT_DS)
    nightly.check(run_date)
    nightly.export(run_date)
    summary = nightly.train(run_date)
    assert summary["retrieval"]["candidates"] > 0 and math.isfinite(summary["retrieval"]["loss"])
    nightly.score(run_date)
    nightly.anomalies(run_date)
    nightly.publish(run_date)

    offered = pl.read_parquet(retrieval_dir(settings, BUILT_DS) / RETRIEVAL_CANDIDATES_FILE)
    in_stock = pl.read_parquet(settings.export_dir(BUILT_DS) / "scoring_items.parquet").height
    # it learned: the held-out day's new clicks are found more often than by 40 items drawn at random
    assert summary["retrieval"]["holdout_recall"] > 40 / in_stock
    assert offered.group_by("user_id").len()["len"].max() <= 40
    dbt = pl.read_parquet(settings.export_dir(BUILT_DS) / "candidates.parquet")
    with duckdb.connect(str(settings.catalog_path), read_only=True) as con:
        published = con.sql(f"select user_id, item_id from recommendations where ds = '{BUILT_DS}'").pl()
    assert published.height > 0
    assert published.unique(["user_id", "item_id"]).height == published.height  # no duplicates
    only_retrieval = published.join(dbt.select("user_id", "item_id"), on=["user_id", "item_id"], how="anti")
    assert only_retrieval.height > 0  # the new source reached the lists
    assert only_retrieval.join(offered, on=["user_id", "item_id"], how="anti").is_empty()

    # the rows score builds equal dbt's rows for the pairs dbt offered too (its features as of D)
    shared = offered.join(dbt.select("user_id", "item_id"), on=["user_id", "item_id"], how="semi")
    assert shared.height > 0
    dbt_without = dbt.join(shared.select("user_id", "item_id"), on=["user_id", "item_id"], how="anti")
    dbt_without.write_parquet(settings.export_dir(BUILT_DS) / "candidates.parquet")
    rebuilt = retrieval_rows(settings, BUILT_DS, shared.select("user_id", "item_id", "retrieval_rank"))
    assert rebuilt.height == shared.height and set(rebuilt["source_mask"]) == {RETRIEVAL_BIT}
    features = [c for c in dbt.columns if c.startswith(("f_", "hist_")) or c in ("category_id", "price")]
    key = ["user_id", "item_id"]
    mine = rebuilt.select(*key, *features).sort(key)
    theirs = dbt.join(shared.select(key), on=key, how="semi").select(*key, *features).sort(key)
    assert mine.equals(theirs, null_equal=True)
