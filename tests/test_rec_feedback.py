"""rec_feedback: yesterday's recommendations judged by today's clicks, computed by hand here."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import duckdb

from tests.conftest import BUILT_DS, dbt_build


def test_hit_rate_and_ndcg_match_a_hand_computation(built_home: Path) -> None:
    ds = BUILT_DS
    wh = str(built_home / "warehouse.duckdb")
    with duckdb.connect(wh) as con:
        clicked = con.execute(
            "select user_id, list(distinct item_id order by item_id) from interactions "
            "where ds = ? and click = 1 group by user_id having count(distinct item_id) >= 2 "
            "order by user_id limit 1",
            [ds],
        ).fetchall()
        ((u, u_items),) = clicked
        n_clicked = len(u_items)
        v = con.execute(
            "select user_id from interactions where ds = ? and user_id != ? group by user_id "
            "having sum(click) = 0 order by user_id limit 1",
            [ds, u],
        ).fetchall()[0][0]
        never = con.execute(
            "select item_id from items where ds = ? and item_id not in "
            "(select item_id from interactions where ds = ? and user_id in (?, ?)) "
            "order by item_id limit 1",
            [ds, ds, u, v],
        ).fetchall()[0][0]
        # published for ds - 1: u gets clicked, not shown, clicked; v gets one item it was not shown
        con.execute(
            "create table recommendations (ds date, user_id varchar, rank integer, item_id varchar, "
            "score double, p_click double, p_cart double, p_purchase double, scene varchar, "
            "model_version varchar)"
        )
        rows = [(u, 1, u_items[0]), (u, 2, never), (u, 3, u_items[1]), (v, 1, never)]
        for user, rank, item in rows:
            con.execute(
                "insert into recommendations values (?, ?, ?, ?, 0, 0, 0, 0, 'home', 'test')",
                [ds - timedelta(days=1), user, rank, item],
            )
    built = dbt_build(built_home, ds, "--select", "rec_feedback_day")
    assert built.returncode == 0, built.stdout[-3000:]
    with duckdb.connect(wh, read_only=True) as con:
        got = {
            (r, m): val
            for r, m, val in con.execute("select recommender, metric, value from rec_feedback_day").fetchall()
        }
    idcg = sum(1 / math.log2(i + 1) for i in range(1, min(n_clicked, 10) + 1))
    assert got[("model", "users_evaluated")] == 2
    assert got[("model", "hit_rate")] == 0.5
    assert math.isclose(got[("model", "ndcg")], (1 + 1 / math.log2(4)) / idcg / 2, rel_tol=1e-9)
    assert got[("model", "shown_rate")] == 0.5  # 2 of the 4 pairs were exposed on ds …
    assert got[("model", "shown_ctr")] == 1.0  # … and both were clicked
    assert got[("popularity", "users_evaluated")] == 2
    assert 0 <= got[("popularity", "hit_rate")] <= 1
