"""The morning page, the index of every night, Data Docs with history, the dbt declaration of the
published tables; and all of it drawn in a real browser (headless Chromium) with nothing fetched."""

from __future__ import annotations

import fcntl
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
import yaml

from checks.runner import CDN_ASSETS, localize_data_docs, run_checks, write_results
from mtl_model.config import DBT_PROJECT_DIR, Settings
from mtl_model.outputs.report import write_index, write_report
from mtl_model.outputs.report.fmt import human, num, observed, seconds
from mtl_model.outputs.report.sections import reason_keys
from mtl_model.pipeline import nightly
from tests.conftest import BUILT_DS

NIGHTS = [date(2026, 11, 3) + timedelta(days=i) for i in range(4)]
LAST = NIGHTS[-1]
STOPPED = LAST + timedelta(days=1)  # ran, failed a data check, never published
TASKS = ("click", "cart", "purchase")
JOINT_COLOR = "#1f5fbf"
# a resource reference that would be fetched: src=, href= of a stylesheet, url(...) in CSS
REMOTE = re.compile(r"""(?:src=|<link[^>]*href=|url\()["']?https?://""", re.I)


# --------------------------------------------------------------------------- numbers for people
def test_numbers_are_written_for_people() -> None:
    assert num(0.74007) == "0.7401" and num(7.000000000000001) == "7" and num(149713.2) == "149,713"
    assert (
        num(1e-5) == "0.00001" and num(None) == "–" and num(float("nan")) == "–" and num(-0.0096) == "−0.0096"
    )
    assert human("7.000000000000001 of its clicks; 1.497e+05 rows; u000312 on 2026-11-04") == (
        "7 of its clicks; 149,700 rows; u000312 on 2026-11-04"
    )
    assert observed('{"observed_value": 149713.0}') == "149,713"
    assert observed('{"unexpected_count": 3, "unexpected_percent": 0.0512}') == "3 unexpected (0.0512 %)"
    assert observed('{"observed_value": ["a", "b"]}') == "2 columns: a, b"
    assert seconds(0.25) == "0.25 s" and seconds(125.4) == "2 min 05 s"


def test_anomaly_reasons_are_grouped_by_kind_without_their_figures() -> None:
    reasons = (
        "clicks 129.0 vs typical 1 (z=86.3); CTR 0.286 vs 0.075 over the last 7 days (4 clicks, "
        "1.0 expected; z=3.0); 11.0 of its clicks from one user (z=8.2); more purchases than the "
        "model expected: 2 in 34 exposures, 0.0 expected (z=3.3)"
    )
    assert reason_keys("item", reasons) == [
        "item: CTR",
        "item: clicks",
        "item: clicks from one user",
        "item: more purchases than the model expected",
    ]


# --------------------------------------------------------------------------- a home of 4 nights
def _metrics(ds: date, i: int) -> pl.DataFrame:
    rows = []
    for t, task in enumerate(TASKS):
        joint = 0.70 + 0.01 * i + 0.02 * t
        values = {"": joint, "_single_task": joint + (0.01 if task == "click" else -0.01)}
        values |= {"_popularity": 0.60 + 0.005 * i, "_truth": 0.85}
        for suffix, value in values.items():
            rows += [(task, f"auc{suffix}", value), (task, f"gauc{suffix}", value - 0.05)]
        rows.append((task, "logloss", 0.3))
    rows += [("all", "mean_auc", 0.72 + 0.01 * i), ("all", "mean_auc_single_task", 0.721 + 0.01 * i)]
    rows += [("all", "n_train", 18880.0), ("all", "n_valid", 5870.0), ("all", "promoted", float(i % 2))]
    return pl.DataFrame(
        {
            "ds": [ds] * len(rows),
            "model_version": [f"{ds:%Y%m%d}-abc"] * len(rows),
            "task": [r[0] for r in rows],
            "metric": [r[1] for r in rows],
            "value": [r[2] for r in rows],
            "split": ["validation"] * len(rows),
        }
    )


def _feedback(ds: date, i: int) -> pl.DataFrame:
    metrics = ("hit_rate", "ndcg", "shown_ctr", "catalog_coverage", "shown_rate", "users_evaluated")
    rows = [
        (rec, m, (0.1 + 0.01 * i) * (2 if rec == "popularity" else 1))
        for rec in ("model", "popularity")
        for m in metrics
    ]
    return pl.DataFrame(
        {"ds": [ds] * len(rows), "recommender": [r[0] for r in rows], "metric": [r[1] for r in rows]}
    ).with_columns(k=pl.lit(10, pl.Int32), value=pl.Series([r[2] for r in rows]))


def _anomalies(ds: date) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "ds": [ds] * 3,
            "entity_type": ["user", "item", "item"],
            "entity_id": ["u000312", "i000204", "i000034"],
            "score": [39.540824, 4.930468, 3.251101],
            "rank": pl.Series([1, 1, 2], dtype=pl.Int32),
            "reasons": [
                "clicks 129.0 vs typical 1 (z=86.3); click_rate 0.806 vs typical 0.1 (z=9.5)",
                "7.000000000000001 of its clicks from one user (z=4.9)",
                "CTR 0.286 vs 0.075 over the last 7 days (4 clicks, 1.0 expected; z=3.0)",
            ],
            "model_version": ["joint-model-z-v1+abc"] * 3,
        }
    )


def _checks(ds: date, warn: bool, error: bool = False) -> pl.DataFrame:
    rows = [
        (
            "stg_events",
            "expect_table_row_count_to_be_between(min_value=1)",
            True,
            '{"observed_value": 6619}',
            "error",
        )
    ]
    if warn:
        rows.append(
            (
                "stg_events_quarantine",
                "expect_table_row_count_to_be_between(max_value=66)",
                False,
                '{"observed_value": 149713.0}',
                "warning",
            )
        )
    if error:
        rows.append(
            (
                "interactions",
                "expect_column_values_to_be_unique(column=exposure_id)",
                False,
                '{"unexpected_count": 3, "unexpected_percent": 0.05}',
                "error",
            )
        )
    names = ("suite", "expectation", "success", "observed", "severity")
    return pl.DataFrame({"ds": [ds] * len(rows), **{n: [r[k] for r in rows] for k, n in enumerate(names)}})


def _recommendations(ds: date) -> pl.DataFrame:
    return pl.DataFrame(
        {"ds": [ds] * 4, "user_id": ["u1", "u1", "u2", "u2"], "rank": pl.Series([1, 2, 1, 2], dtype=pl.Int32)}
    ).with_columns(
        item_id=pl.Series(["i1", "i2", "i1", "i3"]),
        score=pl.lit(0.1), p_click=pl.lit(0.2), p_cart=pl.lit(0.05), p_purchase=pl.lit(0.01),
        scene=pl.lit("home"), model_version=pl.lit(f"{ds:%Y%m%d}-abc"),
    )  # fmt: skip


def _publish(settings: Settings, table: str, frame: pl.DataFrame, ds: date) -> None:
    path = settings.published(table, ds) / "part-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)


def _steps(settings: Settings, ds: date, i: int) -> None:
    folder = settings.output_dir(ds) / "steps"
    folder.mkdir(parents=True, exist_ok=True)
    summaries = {
        "train": {
            "version": f"{ds:%Y%m%d}-abc",
            "promoted": True,
            "reason": "mean AUC 0.7401000001 vs 0.73: better",
        }
    }
    for step, secs in {"dbt": 25.0 + i, "check": 4.2, "export": 1.0, "train": 22.7, "publish": 0.4}.items():
        record = {"step": step, "seconds": secs, "started": "x", "summary": summaries.get(step)}
        (folder / f"{step}.json").write_text(json.dumps(record))


def _warehouse(settings: Settings) -> None:
    """stg_events, the quarantine and the marts for the nights; the landing folders they came from."""
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute("create table stg_events (ds date, is_late boolean)")
        con.execute("create table stg_events_quarantine (ds date, reject_reason varchar)")
        for table in ("users", "items", "interactions"):
            con.execute(f"create table {table} (ds date)")
        for i, ds in enumerate(NIGHTS):
            staged, late, quarantined, duplicates = (
                6600 + 10 * i,
                5 + i,
                {"price_out_of_range": 3, "null_user_id": 2 + i},
                7,
            )
            con.execute("insert into stg_events select ?, i < ? from range(?) t(i)", [ds, late, staged])
            for reason, n in quarantined.items():
                con.execute("insert into stg_events_quarantine select ?, ? from range(?)", [ds, reason, n])
            for table, n in (("users", 500), ("items", 300), ("interactions", 5990 + i)):
                con.execute(f"insert into {table} select ? from range(?)", [ds, n])
            landed = staged + sum(quarantined.values()) + duplicates
            folder = settings.landing("events", ds)
            folder.mkdir(parents=True, exist_ok=True)
            pl.DataFrame({"event_id": [str(k) for k in range(landed)]}).write_parquet(
                folder / "part-0.parquet"
            )


@pytest.fixture(scope="module")
def night_home(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """4 published nights (click's single-task model beats the joint one; a warning on the last
    night), steps recorded, a warehouse for the data health, a night stopped by a data check."""
    settings = Settings(home=tmp_path_factory.mktemp("nights"))
    for i, ds in enumerate(NIGHTS):
        _publish(settings, "model_metrics", _metrics(ds, i), ds)
        _publish(settings, "rec_feedback", _feedback(ds, i), ds)
        _publish(settings, "anomalies", _anomalies(ds), ds)
        _publish(settings, "data_checks", _checks(ds, warn=ds == LAST), ds)
        _publish(settings, "recommendations", _recommendations(ds), ds)
        _steps(settings, ds, i)
    _warehouse(settings)
    stopped = settings.output_dir(STOPPED)
    stopped.mkdir(parents=True)
    _checks(STOPPED, warn=False, error=True).write_parquet(stopped / "data_checks.parquet")
    page = (
        settings.reports_dir
        / "data_docs"
        / "validations"
        / "users"
        / str(LAST)
        / "20261107T020000Z"
        / "tandem-users.html"
    )
    page.parent.mkdir(parents=True)
    page.write_text("<html>users</html>")
    (settings.reports_dir / "data_docs" / "index.html").write_text("<html>docs</html>")
    for ds in NIGHTS:
        write_report(settings, ds)
    return settings


@pytest.fixture(scope="module")
def last_page(night_home: Settings) -> str:
    return (night_home.reports_dir / f"ds={LAST}" / "report.html").read_text()


def test_the_page_shows_the_models_against_their_references_and_says_where_single_task_wins(
    last_page: str,
) -> None:
    for label in ("AUC joint", "AUC single-task", "AUC popularity", "AUC truth", "GAUC single-task"):
        assert label in last_page
    assert "The single-task model beats the joint model on click AUC: 0.7400 vs 0.7300 (−0.01)" in last_page
    assert "on cart AUC" not in last_page  # where the joint model wins, nothing is said
    assert last_page.count("<svg") == 5 and JOINT_COLOR in last_page
    assert "mean AUC 0.7401 vs 0.73: better" in last_page  # why it was promoted, numbers rounded


def test_the_page_shows_data_health_checks_anomalies_and_durations_for_people(last_page: str) -> None:
    text = re.sub(r"<[^>]+>", " ", last_page)
    text = re.sub(r"\s+", " ", text)
    assert "events landed 6,645" in text and "staged 6,630" in text and "duplicates removed 7" in text
    assert "quarantined 8" in text and "null_user_id 5" in text and "price_out_of_range 3" in text
    assert "late events (staged; business day before ds) 8" in text
    assert "interactions 5,993 5,991 1" in text  # rows, median of the nights before, ratio
    assert "warning stg_events_quarantine" in text and "149,713" in text and "1.497e+05" not in text
    assert "7 of its clicks from one user" in text and "7.000000000000001" not in text
    assert "clicks 129 vs typical 1" in text
    assert "train 22.7 s" in text and "dbt 28 s" in text
    assert 'href="../data_docs/validations/users/2026-11-06/20261107T020000Z/tandem-users.html"' in last_page
    assert "Yesterday's lists" in text and "shown CTR" in text and "How to read it" in text


def test_the_index_lists_every_night_with_a_status_line(night_home: Settings) -> None:
    index = (night_home.reports_dir / "index.html").read_text()
    rows = re.findall(r'<tr class="(\w+)">(.*?)</tr>', index, re.S)
    assert [re.search(r"\d{4}-\d\d-\d\d", r[1])[0] for r in rows] == [
        str(d) for d in [STOPPED, *NIGHTS[::-1]]
    ]
    assert [r[0] for r in rows] == ["fail", "warn", "ok", "ok", "ok"]
    assert (
        "stopped at the data checks: 1 error(s), first interactions: expect_column_values_to_be_unique"
        in rows[0][1]
    )
    assert f'href="ds={LAST}/report.html"' in rows[1][1] and "checks 1/2 passed, 1 warning" in rows[1][1]


def test_the_pages_fetch_nothing(night_home: Settings, last_page: str) -> None:
    index = (night_home.reports_dir / "index.html").read_text()
    assert not REMOTE.search(last_page) and not REMOTE.search(index)
    assert "<script" not in last_page  # the charts are SVG: nothing runs


def test_a_night_without_warehouse_or_history_still_gets_a_page(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    _publish(settings, "data_checks", _checks(LAST, warn=False), LAST)
    page = write_report(settings, LAST).read_text()
    assert "no warehouse at" in page and "Data checks: 1 of 1 passed" in page
    assert write_index(settings).exists()


def test_landed_events_add_up_where_the_warehouse_counts_its_duplicates(tmp_path: Path) -> None:
    """With ``stg_events_duplicates`` (dbt's accounting: landed = staged + quarantined + duplicates)
    the landing files are not read; a night without duplicates counts 0 of them."""
    from mtl_model.outputs.report.nights import read_health

    settings = Settings(home=tmp_path)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute(
            "create table stg_events as select * from (values (date '2026-11-05', false), "
            "(date '2026-11-05', true), (date '2026-11-06', false)) t(ds, is_late)"
        )
        con.execute(
            "create table stg_events_quarantine as "
            "select date '2026-11-05' as ds, 'null_user_id' as reject_reason"
        )
        con.execute(
            "create table stg_events_duplicates as "
            "select date '2026-11-05' as ds, 'e1' as event_id from range(4)"
        )
        for table in ("users", "items", "interactions"):
            con.execute(f"create table {table} as select date '2026-11-05' as ds")
    health = read_health(settings, [date(2026, 11, 5), date(2026, 11, 6)])
    rows = health.events.select("ds", "landed", "staged", "quarantined", "duplicates", "late").rows()
    assert rows == [(date(2026, 11, 5), 7, 2, 1, 4, 1), (date(2026, 11, 6), 1, 1, 0, 0, 0)]


# --------------------------------------------------------------------------- steps record themselves
def test_each_step_records_its_seconds_and_summary(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TANDEM_HOME", str(tmp_path))

    @nightly.timed
    def train(run_date: str) -> dict:
        return {"version": "v1", "promoted": False, "reason": "worse"}

    assert train("2026-11-06") == {"version": "v1", "promoted": False, "reason": "worse"}
    record = json.loads((tmp_path / "outputs" / "ds=2026-11-06" / "steps" / "train.json").read_text())
    assert record["step"] == "train" and record["seconds"] >= 0 and record["summary"]["reason"] == "worse"
    assert not (tmp_path / "outputs" / "ds=2026-11-06" / "steps" / "dbt.json").exists()  # no Airflow run

    @nightly.timed
    def publish(run_date: str) -> dict:
        raise RuntimeError("failed")

    with pytest.raises(RuntimeError):
        publish("2026-11-06")
    assert not (tmp_path / "outputs" / "ds=2026-11-06" / "steps" / "publish.json").exists()


def test_dbt_is_timed_from_the_run_start_or_the_end_of_the_landing_check(tmp_path: Path, monkeypatch) -> None:
    from datetime import UTC, datetime

    monkeypatch.setenv("TANDEM_HOME", str(tmp_path))
    start = datetime(2026, 11, 7, 2, 0, tzinfo=UTC)
    monkeypatch.setattr(nightly, "_run_started", lambda: start)
    assert nightly._dbt_started("2026-11-06") == start
    steps = tmp_path / "outputs" / "ds=2026-11-06" / "steps"
    steps.mkdir(parents=True)
    landing = {"step": "check_landing", "started": "2026-11-07T02:00:01.000+00:00", "seconds": 2.5}
    (steps / "check_landing.json").write_text(json.dumps(landing))
    assert nightly._dbt_started("2026-11-06") == datetime(2026, 11, 7, 2, 0, 3, 500000, tzinfo=UTC)
    monkeypatch.setattr(nightly, "_run_started", lambda: None)
    assert nightly._dbt_started("2026-11-06") is None  # outside a DAG run: no dbt time


# --------------------------------------------------------------------------- Data Docs with history
@pytest.fixture(scope="module")
def gx_home(built_once: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A built warehouse checked for two nights, the second one twice (a rerun)."""
    home = tmp_path_factory.mktemp("gx") / "home"
    shutil.copytree(built_once, home, ignore=shutil.ignore_patterns("dbt_target", "dbt_logs"))
    settings = Settings(home=home)
    for ds in (BUILT_DS - timedelta(days=1), BUILT_DS, BUILT_DS):
        run_checks(settings, ds)
    return settings


def test_data_docs_keep_every_night_named_by_ds_and_render_offline(gx_home: Settings) -> None:
    site = gx_home.reports_dir / "data_docs"
    for ds in (BUILT_DS - timedelta(days=1), BUILT_DS):
        pages = sorted(site.glob(f"validations/*/{ds}/*/*.html"))
        assert len(pages) == 5, pages  # one per suite and night: the rerun replaced its night
        assert str(ds) in pages[0].read_text()  # the run name is the day
    stored = sorted((gx_home.home / "gx" / "uncommitted" / "validations").glob(f"*/{BUILT_DS}/*/*.json"))
    assert len(stored) == 5
    for page in [site / "index.html", *site.glob("validations/*/*/*/*.html")]:
        text = page.read_text()
        assert not REMOTE.search(text) and "__none__" not in text, page
        assert "integrity=" not in text and "crossorigin=" not in text
    for name in set(CDN_ASSETS.values()):
        assert (site / "static" / "vendor" / name).exists(), name


def test_localize_rewrites_cdn_urls_to_local_files_at_any_depth(tmp_path: Path) -> None:
    page = tmp_path / "validations" / "s" / "ds" / "t" / "p.html"
    page.parent.mkdir(parents=True)
    url = "https://code.jquery.com/jquery-3.7.1.min.js"
    page.write_text(f'<script src="{url}" integrity="sha384-x" crossorigin="anonymous"></script>')
    assert localize_data_docs(tmp_path) == 1
    text = page.read_text()
    assert text == '<script src="../../../../static/vendor/jquery-3.7.1.min.js"></script>'
    assert (page.parent / "../../../../static/vendor/jquery-3.7.1.min.js").resolve().exists()
    assert localize_data_docs(tmp_path) == 0  # nothing left to rewrite


# --------------------------------------------------------------------------- the dbt declaration
def test_every_published_column_is_declared_and_described_for_dbt_docs(tmp_path: Path) -> None:
    from mtl_model.learn.evaluate import METRICS_SCHEMA
    from mtl_model.outputs.anomalies import OUTPUT_SCHEMA
    from mtl_model.outputs.score import RECOMMENDATIONS_SCHEMA
    from mtl_model.outputs.warehouse import OUTPUT_TABLES

    spec = yaml.safe_load((DBT_PROJECT_DIR / "models" / "outputs_sources.yml").read_text())
    source = next(s for s in spec["sources"] if s["name"] == "published")
    declared = {t["name"]: t for t in source["tables"]}
    settings = Settings(home=tmp_path)
    checks = pl.read_parquet(write_results(settings, LAST, []))
    expected = {
        "recommendations": list(RECOMMENDATIONS_SCHEMA),
        "anomalies": list(OUTPUT_SCHEMA),
        "model_metrics": list(METRICS_SCHEMA),
        "data_checks": checks.columns,
        "rec_feedback": ["ds", "recommender", "metric", "k", "value"],  # rec_feedback_day.sql
    }
    assert set(declared) == set(OUTPUT_TABLES) == set(expected)
    for table, columns in expected.items():
        assert [c["name"] for c in declared[table]["columns"]] == columns, table
        assert all(str(c.get("description", "")).strip() for c in declared[table]["columns"]), table
        assert str(declared[table].get("description", "")).strip()
    exposed = {e["name"] for e in spec["exposures"]}
    assert exposed == {"analyst_catalog", "nightly_report"}


def test_tandem_docs_builds_the_dbt_docs_with_the_homes_settings(
    built_once: Path, tmp_path: Path, capsys
) -> None:
    """One self-contained page (manifest and catalog inlined) with the published tables' columns and
    the exposures; no TANDEM_* variable exported by hand (the tests' environment has none)."""
    from mtl_model.pipeline.docs import docs

    home = tmp_path / "home"
    shutil.copytree(built_once, home, ignore=shutil.ignore_patterns("dbt_target", "dbt_logs"))
    settings = Settings(home=home)
    assert docs(settings) == 0
    page = (settings.reports_dir / "dbt_docs" / "index.html").read_text()
    assert "source.tandem.published.recommendations" in page and "exposure.tandem.nightly_report" in page
    assert "The model's probability that the user adds the item to the cart when shown." in page
    assert '"p_cart"' in page and '"type": "DOUBLE"' in page  # the catalog read the warehouse's columns
    printed = capsys.readouterr().out
    assert f"file://{settings.reports_dir / 'dbt_docs' / 'index.html'}" in printed
    assert f"TANDEM_HOME={home} .venv/bin/tandem airflow api-server --port 8080" in printed


def test_tandem_docs_says_what_is_missing_without_a_warehouse(tmp_path: Path, capsys) -> None:
    from mtl_model.pipeline.docs import docs

    assert docs(Settings(home=tmp_path)) == 1
    printed = capsys.readouterr().out
    assert "no warehouse at" in printed and "(not built yet)" in printed


# --------------------------------------------------------------------------- in a real browser
class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``):
    every request a page makes is seen, and expressions run in the page."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_child, self._to_browser = os.pipe()
        self._from_browser, from_child = os.pipe()

        def fds() -> None:  # the protocol's fds are 3 (commands in) and 4 (answers out)
            a, b = fcntl.fcntl(to_child, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-extensions", "--disable-default-apps", f"--user-data-dir={profile}"]  # fmt: skip
        self.process = subprocess.Popen(
            [executable, *flags, "about:blank"], pass_fds=(3, 4), preexec_fn=fds,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_child)
        os.close(from_child)
        self._answers: dict[int, dict] = {}
        self.events: queue.Queue = queue.Queue()
        self._next = 0
        self._lock = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        self._answers[message["id"]] = message
                        self._lock.notify_all()
                else:
                    self.events.put(message)

    def call(self, method: str, session: str | None = None, timeout: float = 30, **params) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        with self._lock:
            if not self._lock.wait_for(lambda: self._next in self._answers, timeout):
                raise TimeoutError(method)
            answer = self._answers.pop(self._next)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def open(self, url: str, ready: str, timeout: float = 20) -> tuple[str, list[str], list[str]]:
        """Load ``url`` in a new tab until the JS expression ``ready`` is true; return (session, every
        URL it requested, the failed loads)."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Network", "Page", "Runtime"):
            self.call(f"{domain}.enable", session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=1400,
            height=1000,
            deviceScaleFactor=1,
            mobile=False,
        )
        self.call("Page.navigate", session, url=url)
        deadline = time.monotonic() + timeout
        while not self.evaluate(session, f"document.readyState === 'complete' && !!({ready})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: {ready}")
            time.sleep(0.2)
        time.sleep(0.5)  # late requests (fonts, images) show up too
        requested, failed, urls = [], [], {}
        while not self.events.empty():
            event = self.events.get()
            if event.get("sessionId") != session:
                continue
            if event["method"] == "Network.requestWillBeSent":
                urls[event["params"]["requestId"]] = event["params"]["request"]["url"]
                requested.append(event["params"]["request"]["url"])
            elif event["method"] == "Network.loadingFailed":
                failed.append(f"{urls.get(event['params']['requestId'])}: {event['params']['errorText']}")
        return session, requested, failed

    def evaluate(self, session: str, expression: str):
        result = self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory):
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium): the pages were not drawn")
    browser = Chromium(executable, tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


def _outside(urls: list[str]) -> list[str]:
    return [u for u in urls if not u.startswith(("file:", "data:", "about:", "blob:"))]


# in each chart: the drawn joint / model line (a path in that colour with a length), the SVG's size
CHARTS_DRAWN = """[...document.querySelectorAll('figure.chart svg')].map(svg => [
    Math.round(svg.getBoundingClientRect().width), Math.round(svg.getBoundingClientRect().height),
    [...svg.querySelectorAll('path')].filter(p => getComputedStyle(p).stroke === 'rgb(31, 95, 191)'
        && p.getTotalLength() > 20).length])"""


def test_the_report_and_the_index_draw_in_chromium_with_nothing_fetched(
    chromium: Chromium, night_home: Settings
) -> None:
    report = (night_home.reports_dir / f"ds={LAST}" / "report.html").as_uri()
    session, requested, failed = chromium.open(report, "document.querySelectorAll('figure.chart svg').length")
    charts = chromium.evaluate(session, CHARTS_DRAWN)
    assert len(charts) == 5 and all(w > 600 and h > 100 for w, h, _ in charts), charts
    assert all(lines >= 1 for _, _, lines in charts[:2]), (
        charts
    )  # model quality, feedback: the joint/model lines
    assert requested and _outside(requested) == [] and failed == []
    index = (night_home.reports_dir / "index.html").as_uri()
    session, requested, failed = chromium.open(index, "document.querySelector('#nights')")
    assert chromium.evaluate(session, "document.querySelectorAll('#nights tr').length") == 1 + len(NIGHTS) + 1
    assert _outside(requested) == [] and failed == []


def test_the_data_docs_index_draws_its_table_offline_in_chromium(
    chromium: Chromium, gx_home: Settings
) -> None:
    index = (gx_home.reports_dir / "data_docs" / "index.html").as_uri()
    rows = "document.querySelectorAll('table.table tbody tr[data-index]').length"
    session, requested, failed = chromium.open(index, rows)  # bootstrap-table's JS built the rows
    names = chromium.evaluate(session, "document.body.innerText")
    assert (
        chromium.evaluate(session, rows) >= 10
        and str(BUILT_DS) in names
        and str(BUILT_DS - timedelta(days=1)) in names
    )
    assert chromium.evaluate(
        session, "typeof jQuery === 'function' && typeof jQuery.fn.bootstrapTable === 'function'"
    )
    assert any(u.endswith("jquery-3.7.1.min.js") for u in requested)  # served from the site's own copy
    assert _outside(requested) == [] and failed == []
    page = sorted((gx_home.reports_dir / "data_docs").glob(f"validations/users/{BUILT_DS}/*/*.html"))[0]
    session, requested, failed = chromium.open(page.as_uri(), "document.querySelector('.fa-check-circle')")
    text = chromium.evaluate(session, "document.body.textContent")  # Run Name is in a collapsed card
    assert re.search(rf"Run Name\s*{BUILT_DS}", text) and "__none__" not in text
    assert _outside(requested) == [] and failed == []  # fonts, favicon, logos: all found locally


def test_the_browser_check_sees_a_request_that_leaves_the_machine(chromium: Chromium, tmp_path: Path) -> None:
    """The control: a page that asks for a remote image is caught (192.0.2.1 is TEST-NET-1, never routed)."""
    page = tmp_path / "remote.html"
    page.write_text('<html><body><img src="http://192.0.2.1/x.png"><p id="p">x</p></body></html>')
    _, requested, _ = chromium.open(page.as_uri(), "document.querySelector('#p')")
    assert _outside(requested) == ["http://192.0.2.1/x.png"]
