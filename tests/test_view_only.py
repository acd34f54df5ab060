"""A real view-only log (the Tianchi sample in ../shared/data), through dbt: every cart, fav and
purchase is a label or accounted for (label_reconciliation), sampled negatives by popularity are
seeded and point in time, and the exports read right with DuckDB's defaults (issue 19)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from mtl_model.config import Settings
from mtl_model.pipeline.dbt import dbt_command
from mtl_model.sources.ingest import ingest
from tests.conftest import BUILT_DS, dbt_build, tandem_env, tandem_settings
from tests.test_ingest import TIANCHI, TIANCHI_ITEMS, needs_tianchi

LAST_DAY = date(2014, 12, 18)  # the sample's last day (2014-11-18 .. 2014-12-18, China time)
TZ = "Asia/Shanghai"


def tianchi_settings(home: Path, **overrides: object) -> Settings:
    return tandem_settings(home, business_tz=TZ, **overrides)


def query(home: Path, sql: str, params: list | None = None) -> list[tuple]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


@pytest.fixture(scope="module")
def tianchi_landed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Tianchi sample landed (read-only: copy its landing zone to change it)."""
    home = tmp_path_factory.mktemp("tianchi_landed")
    ingest(Settings(home=home, business_tz=TZ), "tianchi-mobile", TIANCHI, items=TIANCHI_ITEMS)
    return home


def built_copy(landed: Path, home: Path, **overrides: object) -> Path:
    shutil.copytree(landed / "landing", home / "landing")
    done = dbt_build(home, LAST_DAY, settings=tianchi_settings(home, **overrides))
    assert done.returncode == 0, done.stdout[-3000:]
    return home


@pytest.fixture(scope="module")
def tianchi_built(tianchi_landed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample built by dbt up to its last day with the default settings."""
    return built_copy(tianchi_landed, tmp_path_factory.mktemp("tianchi_built"))


@needs_tianchi
def test_every_cart_fav_and_purchase_of_a_view_only_log_is_a_label(tianchi_built: Path) -> None:
    staged = dict(
        query(
            tianchi_built,
            "select event_type, count(distinct (session_id, user_id, item_id, coalesce(scene, 'unknown'))) "
            "from stg_events where event_type in ('cart', 'fav', 'purchase') group by 1",
        )
    )
    assert staged == {"cart": 70, "fav": 18, "purchase": 34}  # 70 cart, 18 fav, 35 purchase events
    outcomes = query(
        tianchi_built,
        "select event_type, outcome, reason, sum(keys) from label_reconciliation group by all order by all",
    )
    assert {o for _, o, _, _ in outcomes} == {"labelled"}  # nothing dropped
    labelled = {t: 0 for t in staged}
    for event_type, _, _, keys in outcomes:
        labelled[event_type] += keys
    assert labelled == staged
    # the labels are on interactions rows: on a real view, or on the implied view of the key
    labels = query(
        tianchi_built,
        "select exposure, count(*), sum(click), sum(cart), sum(fav), sum(purchase) from interactions "
        "group by 1 order by 1",
    )
    by_kind = {row[0]: row[1:] for row in labels}
    assert set(by_kind) == {"implied", "sampled", "view"}
    implied_rows, implied_clicks, *_ = by_kind["implied"]
    assert implied_rows == implied_clicks > 0  # an implied view is a view
    assert by_kind["sampled"][1:] == (0, 0, 0, 0)
    totals = [sum(v[i] for v in by_kind.values()) for i in (2, 3, 4)]
    assert totals == [staged["cart"], staged["fav"], staged["purchase"]]
    # before issue 19 only the keys with a view in the same session were labels
    seen = dict(
        query(
            tianchi_built,
            "select event_type, sum(keys) from label_reconciliation where reason = 'exposure' group by 1",
        )
    )
    assert seen["cart"] < staged["cart"] and seen["purchase"] < staged["purchase"]


@needs_tianchi
def test_the_reconciliation_test_fails_when_a_label_is_lost(tianchi_built: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(tianchi_built, home, ignore=shutil.ignore_patterns("dbt_target", "dbt_logs"))
    settings = tianchi_settings(home)

    def reconcile() -> subprocess.CompletedProcess:
        command = dbt_command(
            "test",
            "--select",
            "assert_every_cart_and_purchase_is_accounted_for",
            target=home / "dbt_target",
            settings=settings,
            run_date=LAST_DAY,
        )
        return subprocess.run(command, env=tandem_env(home, settings), capture_output=True, text=True)

    assert reconcile().returncode == 0
    with duckdb.connect(str(home / "warehouse.duckdb")) as con:
        lost = con.execute(
            "delete from interactions where ds = ? and exposure = 'implied' and cart = 1 "
            "and exposure_id = (select min(exposure_id) from interactions where ds = ? "
            "and exposure = 'implied' and cart = 1) returning exposure_id",
            [LAST_DAY, LAST_DAY],
        ).fetchall()
    if not lost:
        pytest.skip("the last day has no implied cart")
    failed = reconcile()
    assert failed.returncode != 0 and "assert_every_cart_and_purchase_is_accounted_for" in failed.stdout


def test_impression_days_account_for_every_cart_and_purchase(built_once: Path) -> None:
    """The simulator logs impressions: a cart or purchase of an item not shown in its session is no
    label, and label_reconciliation names it; staged keys = labelled + dropped, every day."""
    rows = query(
        built_once,
        """
        with staged as (
            select ds, event_type,
                   count(distinct (session_id, user_id, item_id, coalesce(scene, 'unknown'))) as n
            from stg_events where event_type in ('cart', 'fav', 'purchase') group by all
        ), reconciled as (
            select ds, event_type, sum(keys) as n,
                   sum(keys) filter (where outcome = 'labelled') as labelled,
                   list(distinct reason) as reasons
            from label_reconciliation group by all
        ), labels as (
            select ds, sum(cart) as cart, sum(purchase) as purchase from interactions group by ds
        )
        select s.ds, s.event_type, s.n, r.n, r.labelled, r.reasons,
               case s.event_type when 'cart' then l.cart when 'purchase' then l.purchase end
        from staged as s
        left join reconciled as r using (ds, event_type)
        left join labels as l using (ds)
        order by all
        """,
    )
    assert rows and {r[1] for r in rows} >= {"cart", "purchase"}
    for _, event_type, staged, reconciled, labelled, reasons, labels in rows:
        assert staged == reconciled
        assert set(reasons) <= {"exposure", "no_impression_in_session"}
        if event_type != "fav":
            assert labelled == labels
    exposures = query(built_once, "select distinct exposure from interactions")
    assert exposures == [("impression",)]  # no implied views and no sampled rows on impression days


def draws(home: Path, ds: date, users: set[str] | None = None) -> list[tuple]:
    rows = query(
        home,
        "select session_id, user_id, item_id, scene from interactions where ds = ? and exposure = 'sampled' "
        "order by all",
        [ds],
    )
    return [r for r in rows if users is None or r[1] in users]


@needs_tianchi
def test_popularity_negatives_are_seeded_and_follow_popularity(
    tianchi_landed: Path, tianchi_built: Path, tmp_path: Path
) -> None:
    popular = built_copy(tianchi_landed, tmp_path / "popularity", negative_sampling="popularity")
    again = built_copy(tianchi_landed, tmp_path / "again", negative_sampling="popularity")
    assert draws(popular, LAST_DAY) == draws(again, LAST_DAY)  # seeded: a rerun draws the same
    assert draws(popular, LAST_DAY) != draws(tianchi_built, LAST_DAY)  # not the uniform draw
    by_category = built_copy(tianchi_landed, tmp_path / "category", negative_sampling="popularity_category")
    # same category: every negative of a viewed item of a category with 2+ items is from that category
    wrong = query(
        by_category,
        """
        with sizes as (select ds, category_id, count(*) as n from stg_items group by all),
        positives as (
            select ds, session_id, user_id, scene, list(distinct category_id) as categories
            from interactions where exposure <> 'sampled' group by all
        )
        select count(*) from interactions as x
        inner join positives as p using (ds, session_id, user_id, scene)
        where x.exposure = 'sampled' and not list_contains(p.categories, x.category_id)
          and exists (
              select 1 from sizes as s
              where s.ds = x.ds and list_contains(p.categories, s.category_id) and s.n >= 2
          )
          and len(p.categories) = 1
        """,
    )[0][0]
    assert wrong == 0


@needs_tianchi
def test_popularity_of_a_day_counts_only_the_days_before(tianchi_landed: Path, tmp_path: Path) -> None:
    """A burst of views of one item on day D changes no draw of D for the other users (the weights of
    D are the days before D), and the item is drawn far more often on D + 1."""
    day, nxt = LAST_DAY - timedelta(days=1), LAST_DAY
    base = built_copy(tianchi_landed, tmp_path / "base", negative_sampling="popularity")
    burst_home = tmp_path / "burst"
    shutil.copytree(tianchi_landed / "landing", burst_home / "landing")
    folder = burst_home / "landing" / "events" / f"ds={day}"
    files = sorted(folder.glob("*.parquet"))
    events = pl.read_parquet(files[0])
    item = query(base, "select item_id from stg_items where ds = ? order by item_id limit 1", [day])[0][0]
    template = events.filter(pl.col("event_type") == "view").head(1)
    burst = pl.concat(
        [
            template.with_columns(
                pl.lit(f"burst-{i}").alias("event_id"),
                pl.lit(f"burst-user-{i}").alias("user_id"),
                pl.lit(f"burst-session-{i}").alias("session_id"),
                pl.lit(item).alias("item_id"),
            )
            for i in range(200)
        ]
    )
    burst.write_parquet(folder / "part-burst.parquet")
    done = dbt_build(burst_home, nxt, settings=tianchi_settings(burst_home, negative_sampling="popularity"))
    assert done.returncode == 0, done.stdout[-3000:]

    others = {u for _, u, _, _ in draws(base, day)}
    assert others and draws(burst_home, day, others) == draws(base, day, others)  # D: no leakage

    def drawn(home: Path) -> int:
        return sum(1 for _, _, i, _ in draws(home, nxt) if i == item)

    assert drawn(burst_home) > drawn(base) + 5  # D + 1 sees the burst of D


def test_exports_read_right_with_duckdb_defaults(built_home: Path) -> None:
    """samples.parquet holds the whole window: a plain DuckDB read_parquet (hive partitioning on by
    default) returns each row's own ds, and the folder's run_date names the night."""
    from mtl_model.outputs.warehouse import export_day

    settings = tandem_settings(built_home)
    export_day(settings, BUILT_DS)
    samples = settings.export_dir(BUILT_DS) / "samples.parquet"
    assert samples.parent.name == f"run_date={BUILT_DS}"
    with duckdb.connect() as con:
        plain = con.execute(
            "select ds, count(*) from read_parquet(?) group by ds order by ds", [str(samples)]
        ).fetchall()
        raw = con.execute(
            "select ds, count(*) from read_parquet(?, hive_partitioning = false) group by ds order by ds",
            [str(samples)],
        ).fetchall()
        nights = con.execute("select distinct run_date from read_parquet(?)", [str(samples)]).fetchall()
    assert plain == raw and len(plain) > 1
    assert plain == query(built_home, "select ds, count(*) from training_samples group by ds order by ds")
    assert nights == [(BUILT_DS,)]
