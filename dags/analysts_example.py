"""An analyst's DAG, as an example to copy: it runs when the nightly DAG has published tonight's
recommendations (the Asset ``tandem.recommendations``, an outlet of its ``publish`` task), runs one
query on the analyst catalog (read-only, safe while the next night publishes) and logs the result.

The day is the ``ds`` of the triggering Asset event, the ``ds`` param of a manual run, or else the
latest published day. The tables and their columns are in docs/analysts.md.
"""

from __future__ import annotations

import logging

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from mtl_model.config import load_settings
from mtl_model.pipeline.airflow_env import published_assets, task_logging

settings = load_settings()
recommendations = published_assets(settings)["recommendations"]
task_logging("analysts")  # this logger's INFO lines reach the task log at any Airflow log level
log = logging.getLogger("analysts.tandem_example")

MOST_RECOMMENDED = """
select item_id, count(*) as users, round(avg(score), 6) as mean_score
from recommendations
where ds = ?
group by item_id
order by users desc, item_id
limit 10
"""


@dag(
    dag_id="tandem_analyst_example",
    schedule=[recommendations],
    start_date=pendulum.datetime(2000, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"owner": "analysts", "retries": 0},
    params={"ds": Param(None, type=["null", "string"], format="date", title="Day (YYYY-MM-DD)")},
    tags=["tandem", "example"],
    doc_md=__doc__,
)
def tandem_analyst_example() -> None:
    @task
    def most_recommended_items() -> list[dict]:
        import duckdb

        ctx = get_current_context()
        events = ctx["triggering_asset_events"].get(recommendations, [])
        ds = ctx["params"].get("ds") or (events[-1].extra.get("ds") if events else None)
        if not settings.catalog_path.exists():
            raise FileNotFoundError(f"no analyst catalog at {settings.catalog_path}: nothing published yet")
        with duckdb.connect(str(settings.catalog_path), read_only=True) as con:
            ds = ds or con.execute("select max(ds) from recommendations").fetchall()[0][0]
            rows = con.execute(MOST_RECOMMENDED, [ds]).fetchall()
        top = [{"item_id": item, "users": users, "mean_score": score} for item, users, score in rows]
        log.info("ds=%s: the %d items recommended to the most users: %s", ds, len(top), top)
        return top

    most_recommended_items()


tandem_analyst_example()
