"""The sections of a night's page, each a plain dict for the template (``templates/report.html.j2``)
built from :class:`~mtl_model.outputs.report.nights.Nights`; the charts come as SVG text."""

from __future__ import annotations

import re
from datetime import date

import polars as pl

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
    """Where the joint model is not the best trained model: named, with the figures."""
    out = []
    for row in rows:
        for name in ("auc", "gauc"):
            joint, single, pop = (row[name].get(k) for k in ("joint", "single-task", "popularity"))
            if joint is None:
                continue
            if single is not None and single > joint:
                out.append(
                    f"The single-task model beats the joint model on {row['task']} {name.upper()}: "
                    f"{metric(single)} vs {metric(joint)} ({signed(joint - single)})."
                )
            if pop is not None and pop >= joint:
                out.append(
                    f"Popularity is as good as the joint model on {row['task']} {name.upper()}: "
                    f"{metric(pop)} vs {metric(joint)}."
                )
    return out


def model_section(nights: Nights, current: str | None) -> dict:
    """Tonight's AUC / GAUC per task for the joint model and its references, what stands out, the
    trends, and the version: promoted or kept, and why."""
    mm, ds = nights.metrics, nights.ds
    if mm.is_empty():
        return {}
    tasks = tasks_of(mm)
    rows = []
    for task in tasks:
        row = {"task": task}
        for name in ("auc", "gauc"):
            row[name] = {label: _one(mm, name + suffix, task, ds) for label, suffix in REFERENCES.items()}
        joint, single = row["auc"]["joint"], row["auc"]["single-task"]
        row["delta"] = None if joint is None or single is None else joint - single
        rows.append(row)
    references = [k for k in REFERENCES if any(r["auc"][k] is not None for r in rows)]
    series = {
        f"{name}/{task}": {
            label: _values(mm, name + REFERENCES[label], task)
            for label in references
            if not _values(mm, name + REFERENCES[label], task).is_empty()
        }
        for name in ("auc", "gauc")
        for task in tasks
    }
    tonight = mm.filter(pl.col("ds") == ds)
    train = step_summary(nights.steps, ds, "train")
    version = tonight["model_version"][0] if tonight.height else None
    promoted = _one(mm, "promoted", "all", ds)
    return {
        "rows": rows,
        "references": references,
        "remarks": _remarks(rows),
        "chart": charts.metric_trends(series, ("auc", "gauc"), nights.days),
        "version": version,
        "promoted": None if promoted is None else bool(promoted),
        "reason": train.get("reason"),
        "current": current,
        "facts": {
            "training rows": _one(mm, "n_train", "all", ds),
            "validation rows (ds)": _one(mm, "n_valid", "all", ds),
            "epochs trained": _one(mm, "epochs_trained", "all", ds),
            "best epoch": _one(mm, "best_epoch", "all", ds),
        },
        "mean": {label: _one(mm, "mean_auc" + REFERENCES[label], "all", ds) for label in references},
    }


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
    tonight = mm.filter(pl.col("ds") == ds) if not mm.is_empty() else mm
    flagged = an.filter(pl.col("ds") == ds) if not an.is_empty() else None
    steps = nights.steps.filter(pl.col("ds") == ds)
    promoted = _one(mm, "promoted", "all", ds)
    return {
        "version": tonight["model_version"][0] if tonight.height else None,
        "promoted": None if promoted is None else bool(promoted),
        "mean": {label: _one(mm, "mean_auc" + suffix, "all", ds) for label, suffix in REFERENCES.items()},
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
        line = f"model {night['version']} {verb}, mean AUC {metric(mean.get('joint'))}"
        if mean.get("single-task") is not None:
            line += f" (single-task {metric(mean['single-task'])})"
        parts.append(line)
    flagged = night.get("flagged") or {}
    if flagged:
        parts.append(f"{flagged.get('user', 0)} users and {flagged.get('item', 0)} items flagged")
    if night.get("seconds") is not None:
        parts.append(f"steps {seconds(night['seconds'])}")
    return level, " · ".join(parts)
