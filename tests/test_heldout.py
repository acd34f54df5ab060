"""The held-out test split, AUC standard errors, metrics among real views, and the regularisation
options (issue 19, points 2–4)."""

from __future__ import annotations

import math

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from pydantic import ValidationError

from mtl_model.config import Settings
from mtl_model.learn.evaluate import EvalSet, metric_name, metrics_rows, set_metrics
from mtl_model.learn.fit import LR_FLOOR, lr_factor
from mtl_model.learn.metrics import auc, auc_standard_error
from mtl_model.learn.optim import RowSparseAdam
from mtl_model.learn.samples import TEST_SEED, heldout_draw, real_exposures, split_test
from mtl_model.outputs.report.sections import reported, within_noise
from tests.test_hashing import hash_by_hand


def hanley_mcneil(a: float, n_pos: int, n_neg: int) -> float:
    """The formula of Hanley & McNeil (1982), as printed."""
    q1 = a / (2 - a)
    q2 = 2 * a**2 / (1 + a)
    return math.sqrt((a * (1 - a) + (n_pos - 1) * (q1 - a**2) + (n_neg - 1) * (q2 - a**2)) / (n_pos * n_neg))


def test_auc_standard_error_is_the_formula() -> None:
    cases = [(0.5, 10, 10), (0.75, 90, 3000), (0.61, 131, 800), (0.99, 5, 7), (0.3, 1, 1)]
    got = auc_standard_error(*(np.array(c) for c in zip(*cases, strict=True)))
    want = [hanley_mcneil(*c) for c in cases]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert float(auc_standard_error(0.75, 90, 3000)) == pytest.approx(want[1])
    assert np.isnan(auc_standard_error([np.nan, 0.7, 0.7], [10, 0, 10], [10, 10, 0])).all()
    # more positives, less noise: ~90 positives carry about ±0.03 (the figure)
    assert 0.02 < hanley_mcneil(0.6, 90, 3000) < 0.04 and hanley_mcneil(0.6, 9000, 3000) < 0.01


def test_split_test_is_by_user_hash_and_an_analyst_gets_it_in_duckdb() -> None:
    users = [f"u{i}" for i in range(400)] + [None]
    day = pl.DataFrame({"user_id": [u for u in users for _ in range(3)], "x": range(3 * len(users))})
    valid, test = split_test(day, 0.5)
    assert valid.height + test.height == day.height
    assert not set(valid["user_id"].drop_nulls()) & set(test["user_id"].drop_nulls())  # whole users
    assert 0.4 < test["user_id"].n_unique() / len(users) < 0.6
    again_valid, again_test = split_test(day.reverse(), 0.5)  # order does not matter
    assert set(again_test["x"]) == set(test["x"])
    assert split_test(day, 0.0)[1].height == 0 and split_test(day, 0.0)[0].height == day.height
    # the draw: mtl_model.hashing's unit interval of the user id with TEST_SEED, written plainly
    fractions = heldout_draw(pl.Series(["u1", "u2", "u1", None]))
    want = [(hash_by_hand(u, TEST_SEED) >> 11) / 2**53 for u in ("u1", "u2", "u1", None)]
    assert fractions.tolist() == want
    assert set(test["user_id"].drop_nulls()) == {
        u for u in users[:-1] if hash_by_hand(u, TEST_SEED) >> 11 < 2**52
    }
    # docs/models.md: the function registered in DuckDB as a vectorised (Arrow) UDF gives the same users
    con = duckdb.connect()
    con.create_function(
        "heldout_draw",
        lambda u: pa.array(heldout_draw(pl.from_arrow(u))),
        ["VARCHAR"],
        "DOUBLE",
        type="arrow",
        null_handling="special",
    )
    con.register("day", day.to_arrow())
    sql = "select distinct user_id from day where heldout_draw(user_id) < 0.5"
    assert set(con.sql(sql).pl()["user_id"]) == set(test["user_id"].unique())


def test_real_exposures_only_when_told_apart() -> None:
    assert real_exposures(pl.DataFrame({"click": [1, 0]})) is None  # no column: skip the views rows
    assert real_exposures(pl.DataFrame({"exposure": ["view", "implied"]})) is None  # all real
    assert real_exposures(pl.DataFrame({"exposure": ["impression"] * 3})) is None  # impression logs
    mask = real_exposures(pl.DataFrame({"exposure": ["view", "sampled", "implied", None, "impression"]}))
    assert mask.tolist() == [True, False, True, True, True]  # only drawn negatives are not real


def _eval_set(real: np.ndarray | None) -> EvalSet:
    rng = np.random.default_rng(0)
    n = 400
    y = torch.from_numpy((rng.random((n, 2)) < 0.3).astype(np.float32))
    return EvalSet(
        "test", pl.DataFrame({"i": range(n)}), torch.zeros(n, 1), torch.zeros(n, 1), y,
        np.array([f"u{i % 40}" for i in range(n)]), real,
    )  # fmt: skip


def test_metrics_among_views_and_their_names() -> None:
    real = np.arange(400) % 3 != 0
    es = _eval_set(real)
    scores = np.random.default_rng(1).random(400) + es.y[:, 0].numpy() * 0.3
    metrics = set_metrics(es, ("click", "cart"), {"click": scores, "cart": scores})
    click = metrics["click"]
    assert click["auc_views"] == pytest.approx(auc(es.y[real, 0].numpy(), scores[real]))
    assert (
        click["n_pos"] + click["n_neg"] == 400 and click["n_pos_views"] + click["n_neg_views"] == real.sum()
    )
    assert click["auc_se"] == pytest.approx(hanley_mcneil(click["auc"], click["n_pos"], click["n_neg"]))
    rows = metrics_rows(metrics, {"single_task": metrics}, [("all", "n_test", 400)])
    names = {(t, m) for t, m, _ in rows}
    assert {
        ("click", "auc_single_task_views"),
        ("click", "auc_se_single_task"),
        ("all", "mean_auc_views"),
    } <= names
    assert ("all", "mean_auc_single_task_views") in names and ("click", "n_pos_single_task") not in names
    assert metric_name("gauc_views", "popularity") == "gauc_popularity_views"
    assert not any(
        m.endswith("_views")
        for _, m, _ in metrics_rows(set_metrics(_eval_set(None), ("click",), {"click": scores}), {}, [])
    )


def test_metrics_with_the_position_left_out_and_their_names() -> None:
    es = _eval_set(None)
    rng = np.random.default_rng(2)
    logged, plain = (rng.random(400) + es.y[:, 0].numpy() * w for w in (0.6, 0.2))
    metrics = set_metrics(es, ("click",), {"click": logged}, {"click": plain})
    click = metrics["click"]
    assert click["auc_no_position"] == pytest.approx(auc(es.y[:, 0].numpy(), plain))
    assert (
        click["auc"] == pytest.approx(auc(es.y[:, 0].numpy(), logged))
        and click["auc"] > click["auc_no_position"]
    )
    assert "n_pos_no_position" not in click and "positive_rate_no_position" not in click  # the rows' counts
    rows = metrics_rows(metrics, {"single_task": metrics}, [])
    names = {(t, m) for t, m, _ in rows}
    assert {
        ("click", "auc_single_task_no_position"),
        ("click", "gauc_no_position"),
        ("all", "mean_auc_no_position"),
        ("all", "mean_auc_single_task_no_position"),
    } <= names
    assert metric_name("auc_no_position", "popularity") == "auc_popularity_no_position"


def test_report_picks_the_test_split_and_says_what_is_noise() -> None:
    mm = pl.DataFrame(
        {
            "ds": [1, 1, 2, 2],
            "split": ["validation", "test", "validation", "validation"],
            "metric": ["auc", "auc", "auc", "promoted"],
        }
    )
    assert reported(mm).rows() == [
        (1, "test", "auc"),
        (2, "validation", "auc"),
        (2, "validation", "promoted"),
    ]
    assert within_noise(0.02, 0.03, 0.03) is True and within_noise(0.1, 0.03, 0.03) is False
    assert within_noise(None, 0.03, 0.03) is None


def test_lr_schedule() -> None:
    assert lr_factor("constant", 5, 10) == 1.0
    factors = [lr_factor("cosine", s, 11) for s in range(11)]
    assert factors[0] == 1.0 and factors[-1] == pytest.approx(LR_FLOOR)
    assert all(a > b for a, b in zip(factors, factors[1:], strict=False))
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor("steps", 1, 10)


def test_row_sparse_adam_decays_only_touched_rows() -> None:
    table = torch.nn.Embedding(5, 3, sparse=True)
    before = table.weight.detach().clone()
    opt = RowSparseAdam(table.parameters(), lr=0.1, weight_decay=0.5)
    (table(torch.tensor([1, 3])) * 0.0).sum().backward()  # zero gradient: only the decay moves them
    opt.step()
    after = table.weight.detach()
    torch.testing.assert_close(after[[1, 3]], before[[1, 3]] * (1 - 0.1 * 0.5))
    torch.testing.assert_close(after[[0, 2, 4]], before[[0, 2, 4]])
    with pytest.raises(ValueError, match="weight_decay"):
        RowSparseAdam(table.parameters(), weight_decay=-1.0)


def test_settings_validate_the_new_options() -> None:
    settings = Settings()
    assert (settings.test_fraction, settings.lr_schedule) == (0.5, "constant")
    assert settings.weight_decay == settings.embedding_weight_decay == 0.0
    for bad in ({"test_fraction": 1.0}, {"weight_decay": -0.1}, {"lr_schedule": "linear"}):
        with pytest.raises(ValidationError):
            Settings(**bad)


def test_report_tables_show_the_position_left_out_after_the_logged_rows() -> None:
    from datetime import date

    from mtl_model.outputs.report.sections import _tables

    ds = date(2026, 11, 3)
    names = [("all", "mean_auc"), ("all", "mean_auc_no_position"), ("click", "auc"), ("click", "n_pos")]
    names += [("click", "auc_no_position"), ("click", "auc_single_task_no_position")]
    mm = pl.DataFrame(
        {"ds": [ds] * len(names), "task": [t for t, _ in names], "metric": [m for _, m in names]}
    ).with_columns(value=pl.Series([0.8, 0.7, 0.81, 12.0, 0.71, 0.69]))
    tables = _tables(mm, ds, ["click"])
    assert [t["suffix"] for t in tables] == ["", "_no_position"] and tables[0]["title"] == "all rows"
    row = tables[1]["rows"][0]
    assert row["auc"]["joint"] == 0.71 and row["n_pos"] == 12.0  # the counts are the logged rows'
    assert row["delta"] == pytest.approx(0.02)
    alone = _tables(mm.filter(~pl.col("metric").str.ends_with("_no_position")), ds, ["click"])
    assert [(t["suffix"], t["title"]) for t in alone] == [("", "")]
