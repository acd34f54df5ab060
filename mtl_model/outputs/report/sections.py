"""The sections of a night's page, each a plain dict for the template (``templates/report.html.j2``)
built from :class:`~mtl_model.outputs.report.nights.Nights`; the charts come as SVG text."""

from __future__ import annotations

import re
from datetime import date

import polars as pl

from mtl_model.learn.metrics import NO_POSITION, VIEWS
from mtl_model.outputs.report import charts
from mtl_model.outputs.report.fmt import metric, seconds, signed
from mtl_model.outputs.report.nights import STEPS_ORDER, Nights, step_summary

REFERENCES = {"joint": "", "single-task": "_single_task", "popularity": "_popularity", "truth": "_truth"}
FEEDBACK_METRICS = {
    "hit_rate": "hit rate",
    "ndcg": "NDCG",
    "shown_ctr": "shown CTR",
    "catalog_coverage": "catalog coverage",
}
FEEDBACK_ROWS = (*FEEDBACK_METRICS, "purchase_hit_rate", "shown_rate", "users_evaluated")
# the "; " between two reasons, not the one inside "(4 clicks, 1.0 expected; z=3.0)"
_REASONS = re.compile(r";\s*(?![^()]*\))")


AMONG = {"": "", VIEWS: " among real views", NO_POSITION: " with the position left out"}
TABLE_TITLES = {
    VIEWS: "among real views (sampled negatives left out)",
    "": "all rows",
    NO_POSITION: "with the logged position left out (as the candidates are scored)",
}
NOISE_SE = 2.0  # a joint − single-task difference under this many standard errors is "within noise"


def reported(frame: pl.DataFrame) -> pl.DataFrame:
    """Each night's reported rows: its ``test`` split where it has one (the rows no choice was made
    on), else its ``validation`` split (older nights, or ``test_fraction`` = 0)."""
    if frame.is_empty() or "split" not in frame.columns:
        return frame
    with_test = frame.filter(pl.col("split") == "test").get_column("ds").unique()
    return frame.filter((pl.col("split") == "test") | ~pl.col("ds").is_in(with_test.implode()))


def selection(frame: pl.DataFrame) -> pl.DataFrame:
    """The ``validation`` split's rows: what picked the epoch and the promotion, and the night's counts."""
    if frame.is_empty() or "split" not in frame.columns:
        return frame
    return frame.filter(pl.col("split") == "validation")


def night_split(frame: pl.DataFrame, ds: date) -> str | None:
    """The split the night ``ds`` reports (``test`` or ``validation``), None without metrics."""
    rows = reported(frame.filter(pl.col("ds") == ds)) if not frame.is_empty() else frame
    if rows.is_empty():
        return None
    return str(rows["split"][0]) if "split" in rows.columns else "validation"


def _name(base: str, suffix: str, views: str) -> str:
    """``auc`` + ``_single_task`` + ``_views`` → ``auc_single_task_views`` (evaluate.metric_name)."""
    return base + suffix + views


def _values(frame: pl.DataFrame, name: str, task: str, ds: date | None = None) -> pl.DataFrame:
    """(ds, value) of one metric and task, the night's only when ``ds`` is given."""
    if frame.is_empty():
        return pl.DataFrame(schema={"ds": pl.Date, "value": pl.Float64})
    rows = frame.filter((pl.col("metric") == name) & (pl.col("task") == task))
    if ds is not None:
        rows = rows.filter(pl.col("ds") == ds)
    return rows.select("ds", "value").drop_nulls()


def _one(frame: pl.DataFrame, name: str, task: str, ds: date) -> float | None:
    rows = _values(frame, name, task, ds)
    return float(rows["value"][0]) if rows.height else None


def tasks_of(metrics: pl.DataFrame) -> list[str]:
    if metrics.is_empty():
        return []
    found = metrics.filter((pl.col("metric") == "auc") & (pl.col("task") != "all"))["task"].unique()
    return sorted(found.to_list(), key=lambda t: (("click", "cart", "purchase") + (t,)).index(t))


def _remarks(rows: list[dict]) -> list[str]:
    """Where the joint model is not the best trained model: named, with the figures; an AUC
    difference within the noise (under 2 standard errors) is said to be so."""
    out = []
    for row in rows:
        for name in ("auc", "gauc"):
            joint, single, pop = (row[name].get(k) for k in ("joint", "single-task", "popularity"))
            if joint is None:
                continue
            if single is not None and single > joint:
                noise = " (within noise)" if name == "auc" and row["within_noise"] else ""
                out.append(
                    f"The single-task model beats the joint model on {row['task']} {name.upper()}"
                    f"{row['among']}: {metric(single)} vs {metric(joint)} ({signed(joint - single)}){noise}."
                )
            if pop is not None and pop >= joint:
                out.append(
                    f"Popularity is as good as the joint model on {row['task']} {name.upper()}"
                    f"{row['among']}: {metric(pop)} vs {metric(joint)}."
                )
    return out


def within_noise(diff: float | None, se_a: float | None, se_b: float | None) -> bool | None:
    """|diff| < 2·SE of the difference, SE = √(se_a² + se_b²) (as if independent: the two AUCs are
    on the same rows and positively correlated, so this overstates the noise, never understates it)."""
    if diff is None or se_a is None or se_b is None:
        return None
    return abs(diff) < NOISE_SE * (se_a**2 + se_b**2) ** 0.5


def task_rows(mm: pl.DataFrame, ds: date, tasks: list[str], views: str = "") -> list[dict]:
    """One row per task of the night: AUC, its standard error and GAUC per reference, the positives
    and negatives, joint − single-task and whether it is within the noise; ``views="_views"``: among
    real exposures only; ``views="_no_position"``: with the position left out (the same rows)."""
    rows = []
    counts = "" if views == NO_POSITION else views  # the rows are the logged rows
    for task in tasks:
        row: dict = {"task": task, "among": AMONG[views]}
        for name in ("auc", "auc_se", "gauc"):
            row[name] = {
                label: _one(mm, _name(name, suffix, views), task, ds) for label, suffix in REFERENCES.items()
            }
        row["n_pos"], row["n_neg"] = (_one(mm, _name(k, "", counts), task, ds) for k in ("n_pos", "n_neg"))
        joint, single = row["auc"]["joint"], row["auc"]["single-task"]
        row["delta"] = None if joint is None or single is None else joint - single
        row["within_noise"] = within_noise(row["delta"], row["auc_se"]["joint"], row["auc_se"]["single-task"])
        rows.append(row)
    return rows


def _tables(shown: pl.DataFrame, ds: date, tasks: list[str]) -> list[dict]:
    """The night's tables of task rows: among real views first where measured, all rows, then with
    the position left out where measured; the all-rows table has no title when it is alone."""
    measured = [
        sfx for sfx in TABLE_TITLES if not sfx or _one(shown, f"mean_auc{sfx}", "all", ds) is not None
    ]
    return [
        {
            "title": TABLE_TITLES[sfx] if len(measured) > 1 else "",
            "suffix": sfx,
            "rows": task_rows(shown, ds, tasks, sfx),
        }
        for sfx in measured
    ]


def model_section(nights: Nights, current: str | None) -> dict:
    """Tonight's AUC (± standard error) / GAUC per task for the joint model and its references on the
    night's reported split, among real views first where the source has sampled negatives; what
    stands out, the trends, and the version: promoted or kept (on the validation split), and why."""
    mm, ds = nights.metrics, nights.ds
    if mm.is_empty():
        return {}
    shown, chosen = reported(mm), selection(mm)
    tasks = tasks_of(mm)
    tables = _tables(shown, ds, tasks)
    rows = [r for t in tables for r in t["rows"]]
    references = [k for k in REFERENCES if any(r["auc"][k] is not None for r in rows)]
    views = VIEWS if tables[0]["suffix"] == VIEWS else ""  # the chart follows the first table
    series = {
        f"{name}/{task}": {
            label: _values(shown, _name(name, REFERENCES[label], views), task)
            for label in references
            if not _values(shown, _name(name, REFERENCES[label], views), task).is_empty()
        }
        for name in ("auc", "gauc")
        for task in tasks
    }
    tonight = mm.filter(pl.col("ds") == ds)
    train = step_summary(nights.steps, ds, "train")
    promoted = _one(chosen, "promoted", "all", ds)
    split = night_split(mm, ds)
    return {
        "tables": tables,
        "rows": next(t["rows"] for t in tables if not t["suffix"]),
        "references": references,
        "remarks": _remarks(rows),
        "chart": charts.metric_trends(series, ("auc", "gauc"), nights.days),
        "chart_views": bool(views),
        "version": tonight["model_version"][0] if tonight.height else None,
        "promoted": None if promoted is None else bool(promoted),
        "reason": train.get("reason"),
        "current": current,
        "split": split,
        "facts": {
            "training rows": _one(chosen, "n_train", "all", ds),
            "validation rows (ds: pick the epoch and the promotion)": _one(chosen, "n_valid", "all", ds),
            "test rows (ds: the metrics shown)": _one(mm, "n_test", "all", ds),
            "epochs trained": _one(chosen, "epochs_trained", "all", ds),
            "best epoch": _one(chosen, "best_epoch", "all", ds),
            "last epoch − best (validation mean AUC)": _neg(_one(chosen, "last_epoch_gap", "all", ds)),
            "validation mean AUC (optimistic: it chose)": _one(chosen, "mean_auc", "all", ds),
        },
        "mean": {label: _one(shown, "mean_auc" + REFERENCES[label], "all", ds) for label in references},
    }


def _neg(x: float | None) -> float | None:
    return None if x is None else -x


def feedback_section(nights: Nights) -> dict:
    """Yesterday's lists judged by today: model vs popularity, tonight and over the nights."""
    fb, ds = nights.feedback, nights.ds
    if fb.is_empty():
        return {}
    fb = fb.rename({"recommender": "task"})  # same shape as model_metrics for _values
    rows = [
        {"metric": name, **{rec: _one(fb, name, rec, ds) for rec in ("model", "popularity")}}
        for name in FEEDBACK_ROWS
        if _one(fb, name, "model", ds) is not None or _one(fb, name, "popularity", ds) is not None
    ]
    series = {
        name: {rec: _values(fb, name, rec) for rec in ("model", "popularity")} for name in FEEDBACK_METRICS
    }
    k = fb.filter(pl.col("ds") == ds)["k"].max() if "k" in fb.columns else None
    return {
        "rows": rows,
        "k": k,
        "chart": charts.panels(series, nights.days, FEEDBACK_METRICS),
        "judged": ds,
    }


def health_section(nights: Nights) -> dict:
    """The night's volumes and what was set aside, the marts' rows against the window's median."""
    health, ds = nights.health, nights.ds
    out: dict = {"note": health.note, "tonight": None, "reasons": [], "marts": [], "chart": None}
    if health.events.is_empty():
        return out
    tonight = health.events.filter(pl.col("ds") == ds)
    out["tonight"] = tonight.row(0, named=True) if tonight.height else None
    out["reasons"] = (
        health.quarantine.filter(pl.col("ds") == ds).select("reason", "rows").rows(named=True)
        if not health.quarantine.is_empty()
        else []
    )
    marts = []
    for table in ("users", "items", "interactions"):
        rows = health.marts.filter(pl.col("table") == table) if not health.marts.is_empty() else health.marts
        now = rows.filter(pl.col("ds") == ds)["rows"].sum() if rows.height else None
        before = rows.filter(pl.col("ds") < ds)["rows"]
        median = float(before.median()) if before.len() else None
        ratio = now / median if now is not None and median else None
        marts.append({"table": table, "rows": now, "median": median, "ratio": ratio})
    out["marts"] = marts
    quarantine = health.quarantine if not health.quarantine.is_empty() else _no_quarantine()
    out["chart"] = charts.health_chart(health.events, quarantine, nights.days)
    return out


def _no_quarantine() -> pl.DataFrame:
    return pl.DataFrame(schema={"ds": pl.Date, "reason": pl.String, "rows": pl.Int64})


def checks_section(nights: Nights) -> dict:
    """Every failed or warned expectation of the night with its observed value."""
    checks = nights.checks
    if checks.is_empty():
        return {}
    tonight = checks.filter(pl.col("ds") == nights.ds)
    failed = tonight.filter(~pl.col("success")).sort(["severity", "suite", "expectation"])
    return {
        "total": tonight.height,
        "passed": tonight.height - failed.height,
        "warnings": failed.filter(pl.col("severity") == "warning").height,
        "errors": failed.filter(pl.col("severity") != "warning").height,
        "failed": failed.select("suite", "expectation", "observed", "severity").rows(named=True),
    }


def reason_keys(entity_type: str, reasons: str | None) -> list[str]:
    """The kinds of reason in an ``anomalies.reasons`` text, without their figures:
    ``clicks 129.0 vs typical 1 (z=86.3); 11.0 of its clicks from one user (z=8.2)`` →
    ``user: clicks``, ``user: clicks from one user``."""
    keys = []
    for part in _REASONS.split(reasons or ""):
        text = re.sub(r"^-?[\d.,]+\s*", "", part.strip())
        key = re.split(r"[:(]|\s-?\d", text, maxsplit=1)[0].strip().removeprefix("of its ")
        if key:
            keys.append(f"{entity_type}: {key}")
    return sorted(set(keys))


def anomalies_section(nights: Nights, top: int = 5) -> dict:
    """Flagged users and items per kind of reason over the nights; the night's top entities."""
    an, ds = nights.anomalies, nights.ds
    if an.is_empty():
        return {}
    keyed = an.select(
        "ds",
        pl.struct("entity_type", "reasons")
        .map_elements(lambda r: reason_keys(r["entity_type"], r["reasons"]), return_dtype=pl.List(pl.String))
        .alias("reason"),
    ).explode("reason")
    counts = keyed.drop_nulls().group_by("ds", "reason").agg(pl.len().cast(pl.Int64).alias("rows"))
    tonight = an.filter(pl.col("ds") == ds)
    tops = {
        kind: tonight.filter(pl.col("entity_type") == kind).sort("rank").head(top).rows(named=True)
        for kind in ("user", "item")
    }
    return {
        "chart": charts.stacked_bars(counts, "reason", "flagged entities by kind of reason", nights.days),
        "counts": {kind: tonight.filter(pl.col("entity_type") == kind).height for kind in ("user", "item")},
        "top": tops,
        "detector": tonight["model_version"][0] if tonight.height else None,
    }


def durations_section(nights: Nights) -> dict:
    """The night's seconds per step and the trend; ``dbt`` is the run's start to the check step."""
    steps, ds = nights.steps, nights.ds
    if steps.is_empty() or steps.filter(pl.col("ds") == ds).is_empty():
        return {}
    tonight = steps.filter(pl.col("ds") == ds)
    order = {s: i for i, s in enumerate(STEPS_ORDER)}
    rows = sorted(tonight.select("step", "seconds").rows(named=True), key=lambda r: order.get(r["step"], 99))
    return {
        "rows": rows,
        "total": float(tonight["seconds"].sum()),
        "chart": charts.durations_chart(steps, ds, nights.days, STEPS_ORDER),
    }


def coverage(nights: Nights) -> dict:
    recs = nights.recommendations
    if recs.is_empty():
        return {}
    return {
        "n_users": recs["user_id"].n_unique(),
        "n_items": recs["item_id"].n_unique(),
        "n_rows": recs.height,
        "version": recs["model_version"][0],
    }


def brief(nights: Nights) -> dict:
    """What the status line of a night needs, without charts (the index builds one per night)."""
    mm, an, ds = nights.metrics, nights.anomalies, nights.ds
    shown = reported(mm)
    tonight = mm.filter(pl.col("ds") == ds) if not mm.is_empty() else mm
    flagged = an.filter(pl.col("ds") == ds) if not an.is_empty() else None
    steps = nights.steps.filter(pl.col("ds") == ds)
    promoted = _one(selection(mm), "promoted", "all", ds)
    return {
        "version": tonight["model_version"][0] if tonight.height else None,
        "promoted": None if promoted is None else bool(promoted),
        "split": night_split(mm, ds),
        "mean": {label: _one(shown, "mean_auc" + suffix, "all", ds) for label, suffix in REFERENCES.items()},
        "flagged": {}
        if flagged is None
        else {k: flagged.filter(pl.col("entity_type") == k).height for k in ("user", "item")},
        "seconds": float(steps["seconds"].sum()) if steps.height else None,
    }


def status_line(checks: dict, night: dict) -> tuple[str, str]:
    """(level, one line) of a published night: ``ok`` or ``warn`` (a check warned); the checks, the
    model (promoted or kept, mean AUC against the single-task models), anomalies, time."""
    parts, level = [], "ok"
    if checks:
        if checks["warnings"] or checks["errors"]:
            level = "warn"
        warned = f", {checks['warnings']} warning{'s' if checks['warnings'] != 1 else ''}"
        parts.append(
            f"checks {checks['passed']}/{checks['total']} passed" + (warned if checks["warnings"] else "")
        )
    if night.get("version"):
        verb = "promoted" if night.get("promoted") else "not promoted (the current model stays)"
        mean = night["mean"]
        split = night.get("split") or "validation"
        line = f"model {night['version']} {verb}, {split} mean AUC {metric(mean.get('joint'))}"
        if mean.get("single-task") is not None:
            line += f" (single-task {metric(mean['single-task'])})"
        parts.append(line)
    flagged = night.get("flagged") or {}
    if flagged:
        parts.append(f"{flagged.get('user', 0)} users and {flagged.get('item', 0)} items flagged")
    if night.get("seconds") is not None:
        parts.append(f"steps {seconds(night['seconds'])}")
    return level, " · ".join(parts)
