"""The pages' charts: matplotlib figures as inline SVG (text kept as text, no script, no fetch).

Every chart is small multiples over the nights, each panel on its own y range so a difference of
0.01 AUC shows; the same colour is the same recommender everywhere (``COLORS``).
"""

from __future__ import annotations

import io
from datetime import date

import polars as pl

from mtl_model.outputs.report.fmt import num

COLORS = {
    "joint": "#1f5fbf",
    "single-task": "#e07b00",
    "popularity": "#7a7a7a",
    "truth": "#2e9d4e",
    "model": "#1f5fbf",
}
DASHES = {"truth": (4, 2), "popularity": (1.5, 1.5)}
PALETTE = ("#1f5fbf", "#e07b00", "#2e9d4e", "#c0392b", "#8e44ad", "#16a2b8", "#7a7a7a", "#b8860b")
STYLE = {
    "svg.fonttype": "none",  # text stays text: searchable, the page's font
    "font.family": "sans-serif",
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.6,
    "legend.frameon": False,
}


def _figure(ncols: int, nrows: int = 1, width: float = 10.5, height: float = 2.3):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def to_svg(fig) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), scaled by the page's CSS."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context(STYLE):
        fig.savefig(buf, format="svg")
    text = buf.getvalue()
    return text[text.index("<svg") :]


def _date_axis(ax, days: list[date]) -> None:
    """Ticks on the nights (at most 8 labelled), half a day of margin on each side."""
    from matplotlib import dates as mdates

    if not days:
        return
    if len(days) <= 8:
        ax.set_xticks(days)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    else:
        locator = mdates.AutoDateLocator(minticks=3, maxticks=8)
        locator.intervald[mdates.HOURLY] = [24]  # never between two nights
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    ax.set_xlim(mdates.date2num(days[0]) - 0.5, mdates.date2num(days[-1]) + 0.5)


def _series(ax, frame: pl.DataFrame, label: str) -> None:
    """One line of ``frame`` (ds, value), markers on the nights."""
    if frame.is_empty():
        return
    frame = frame.sort("ds")
    ax.plot(
        frame["ds"].to_list(),
        frame["value"].to_list(),
        color=COLORS.get(label, "#333333"),
        dashes=DASHES.get(label, ()),
        marker="o",
        markersize=3,
        linewidth=1.6 if label in ("joint", "model") else 1.2,
        label=label,
    )


def _legend(fig, axes) -> None:
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside upper center", ncols=len(labels))


def metric_trends(series: dict[str, dict[str, pl.DataFrame]], metrics: tuple[str, ...], days) -> str:
    """A row per metric (AUC, GAUC), a panel per task; ``series[metric_task][recommender]`` is a
    frame (ds, value)."""
    import matplotlib

    tasks = sorted({key.split("/")[1] for key in series}, key=_task_order)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(max(len(tasks), 1), len(metrics))
        for row, metric in enumerate(metrics):
            for col, task in enumerate(tasks):
                ax = axes[row][col]
                for label, frame in series.get(f"{metric}/{task}", {}).items():
                    _series(ax, frame, label)
                ax.set_title(f"{task} {metric.upper()}")
                ax.margins(y=0.15)
                _date_axis(ax, days)
        _legend(fig, axes)
        return to_svg(fig)


def _task_order(task: str) -> tuple[int, str]:
    order = ("click", "cart", "purchase")
    return (order.index(task) if task in order else len(order), task)


def panels(series: dict[str, dict[str, pl.DataFrame]], days, titles: dict[str, str] | None = None) -> str:
    """One panel per key of ``series`` (a metric), a line per recommender; ``titles`` names them."""
    import matplotlib

    keys = list(series)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(max(len(keys), 1))
        for col, key in enumerate(keys):
            ax = axes[0][col]
            for label, frame in series[key].items():
                _series(ax, frame, label)
            ax.set_title((titles or {}).get(key, key))
            ax.margins(y=0.15)
            _date_axis(ax, days)
        _legend(fig, axes)
        return to_svg(fig)


def stacked_bars(frame: pl.DataFrame, by: str, title: str, days, top: int = 7, ax=None) -> str | None:
    """Bars per night (``ds``) stacked by ``by`` (``rows`` summed); the ``top`` largest groups, the
    rest as "other". Drawn into ``ax`` when given (returns None), else its own figure's SVG."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        own = ax is None
        if own:
            fig, axes = _figure(1, width=10.5, height=2.4)
            ax = axes[0][0]
        ranked = frame.group_by(by).agg(pl.col("rows").sum()).sort(["rows", by], descending=[True, False])
        keep = ranked[by].head(top).to_list()
        grouped = frame.with_columns(
            pl.when(pl.col(by).is_in(keep)).then(pl.col(by)).otherwise(pl.lit("other")).alias(by)
        )
        bottoms = dict.fromkeys(days, 0.0)
        for i, group in enumerate([*keep, *(["other"] if len(ranked) > top else [])]):
            part = grouped.filter(pl.col(by) == group).group_by("ds").agg(pl.col("rows").sum())
            values = dict(zip(part["ds"].to_list(), part["rows"].to_list(), strict=True))
            heights = [float(values.get(d, 0)) for d in days]
            color = PALETTE[i % len(PALETTE)]
            bottom = [bottoms[d] for d in days]
            ax.bar(days, heights, bottom=bottom, width=0.7, label=_short(group), color=color)
            for d, h in zip(days, heights, strict=True):
                bottoms[d] += h
        ax.set_title(title)
        ax.set_axisbelow(True)
        _date_axis(ax, days)
        if not any(bottoms.values()):
            ax.set_ylim(0, 1)
            ax.text(0.5, 0.5, "none on these nights", transform=ax.transAxes, ha="center", color="#6b6b6b")
        elif keep:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5)
        return to_svg(fig) if own else None


def _short(label: str, width: int = 38) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def health_chart(events: pl.DataFrame, quarantine: pl.DataFrame, days) -> str:
    """Left: events landed and staged per night; right: what did not make it, by cause."""
    import matplotlib

    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(2, height=2.4)
        ax = axes[0][0]
        x = events["ds"].to_list()
        ax.plot(x, events["landed"].to_list(), "o--", color="#7a7a7a", markersize=5, label="landed")
        ax.plot(x, events["staged"].to_list(), "o-", color="#1f5fbf", markersize=3, label="staged")
        ax.set_title("events landed and staged")
        ax.margins(y=0.2)
        ax.legend(fontsize=7.5)
        ax.yaxis.set_major_formatter(_thousands())
        _date_axis(ax, days)
        causes = pl.concat(
            [
                quarantine.select(
                    "ds", pl.concat_str(pl.lit("quarantined: "), "reason").alias("cause"), "rows"
                ),
                events.select(
                    "ds", pl.lit("duplicates removed").alias("cause"), pl.col("duplicates").alias("rows")
                ),
                events.select("ds", pl.lit("late (staged)").alias("cause"), pl.col("late").alias("rows")),
            ],
            how="vertical_relaxed",
        )
        stacked_bars(causes, "cause", "rows set aside or late, by cause", days, ax=axes[0][1])
        return to_svg(fig)


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda value, _pos: num(value, 3))


def durations_chart(steps: pl.DataFrame, ds: date, days, order: tuple[str, ...]) -> str:
    """Left: the night's seconds per step; right: every night's seconds stacked by step."""
    import matplotlib

    ranked = sorted(set(steps["step"].to_list()), key=lambda s: (order.index(s) if s in order else 99, s))
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(2, height=2.4)
        ax = axes[0][0]
        tonight = steps.filter(pl.col("ds") == ds)
        seconds = dict(zip(tonight["step"].to_list(), tonight["seconds"].to_list(), strict=True))
        labels = [s for s in ranked if s in seconds][::-1]
        ax.set_axisbelow(True)
        ax.barh(labels, [seconds[s] for s in labels], color="#1f5fbf")
        for y, label in enumerate(labels):
            ax.text(seconds[label], y, f" {num(seconds[label], 3)} s", va="center", fontsize=7.5)
        ax.set_title(f"seconds per step on {ds}")
        ax.margins(x=0.15)
        frame = steps.select("ds", pl.col("step").alias("by"), pl.col("seconds").alias("rows"))
        stacked_bars(frame, "by", "seconds per night, by step", days, top=8, ax=axes[0][1])
        return to_svg(fig)
