"""Synthetic e-commerce site (``tandem simulate``): writes landing-zone days (events, items, users) plus
the ground truth (exposure probabilities, bots, planted anomalies, injected bad rows).

This is the public entry; the work is done by :mod:`mtl_model.sources.simulator`. The specification
(the model, the files, determinism, anomalies and bad data) is docs/simulator.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import polars as pl

from mtl_model.config import Settings
from mtl_model.dates import parse_date
from mtl_model.sources.simulator.anomalies import ANOMALY_KINDS, plant_anomalies, standing_anomalies
from mtl_model.sources.simulator.bad_data import BAD_ROW_KINDS, inject_bad_data
from mtl_model.sources.simulator.config import SimConfig
from mtl_model.sources.simulator.day import SIMULATED_EVENT_TYPES, Day, simulate_funnel
from mtl_model.sources.simulator.universe import CATEGORY_PATHS, Universe, true_probabilities
from mtl_model.sources.simulator.writing import (
    DayWriter,
    events_csv_path,
    merge_anomalies,
    write_standing_truth,
)

__all__ = [
    "SimConfig",
    "SimSummary",
    "simulate",
    "true_probabilities",
    "main_summary_line",
    "events_csv_path",
    "CATEGORY_PATHS",
    "SIMULATED_EVENT_TYPES",
    "ANOMALY_KINDS",
    "BAD_ROW_KINDS",
]


@dataclass
class SimSummary:
    days: list[date]
    events: int
    users: int
    items: int
    bots: int
    sessions: int = 0
    impressions: int = 0
    clicks: int = 0
    carts: int = 0
    purchases: int = 0
    seconds: float = 0.0
    landing_dir: Path | None = None
    truth_dir: Path | None = None
    per_day: dict[str, int] = field(default_factory=dict)  # ds -> events
    bad_rows: int = 0  # rows of truth/bad_rows written (what was injected)
    anomalies: int = 0  # rows of truth/anomalies.parquet for the simulated days

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else float("nan")

    def add_day(self, day: date, res: Day) -> None:
        """Count one simulated day in."""
        n_events = res.events.height
        self.days.append(day)
        self.per_day[str(day)] = n_events
        self.events += n_events
        self.sessions += res.sessions
        self.impressions += int(res.counts[0])
        self.clicks += int(res.counts[1])
        self.carts += int(res.counts[2])
        self.purchases += int(res.counts[3])
        if res.bad_rows is not None:
            self.bad_rows += res.bad_rows.height


def main_summary_line(s: SimSummary) -> str:
    span = f"{s.days[0]}..{s.days[-1]}" if s.days else "-"
    return (
        f"simulated {len(s.days)} day(s) {span}: {s.events:,} events "
        f"({s.impressions:,} impressions, {s.clicks:,} clicks, {s.carts:,} carts, {s.purchases:,} purchases; "
        f"CTR {s.ctr:.1%}) from {s.users:,} users ({s.bots} bots), {s.items:,} items "
        f"-> {s.landing_dir} ({s.events_per_second:,.0f} events/s)"
        + (f"; {s.bad_rows:,} bad rows injected" if s.bad_rows else "")
    )


def _simulate_day(uni: Universe, day: date, tz: str) -> Day:
    """One day: the funnel, then the planted anomalies, then the bad data (each only if switched on)."""
    out, funnel = simulate_funnel(uni, day, tz)
    out.anomalies = standing_anomalies(uni, day)
    if uni.cfg.plants_anomalies:
        plant_anomalies(uni, day, tz, out, funnel)
    if uni.cfg.injects_bad_data:
        inject_bad_data(uni.cfg, day, tz, out)
    return out


def simulate(settings: Settings, start: date | str, days: int, config: SimConfig = SimConfig()) -> SimSummary:  # noqa: B008
    """Simulate ``days`` days from ``start``; write the landing zone and ``settings.home / "truth"``.

    Each day's folders (``landing/{events,items,users}/ds=D`` and ``truth/exposures/ds=D``) are
    replaced as a whole; events are committed last, so a present events folder means a complete day.
    Files of day D are written by two threads while day D+1 is being simulated.
    """
    if isinstance(start, str):
        start = parse_date(start)
    if days < 1:
        raise ValueError("days must be >= 1")
    t0 = time.perf_counter()
    uni = Universe(config)
    truth = settings.home / "truth"
    write_standing_truth(uni, truth)
    summary = SimSummary(
        days=[],
        events=0,
        users=config.n_users,
        items=config.n_items,
        bots=int(uni.bots.size),
        landing_dir=settings.landing_dir,
        truth_dir=truth,
    )
    anomalies: list[pl.DataFrame] = []
    with DayWriter(settings, config.write_csv) as writer:
        for k in range(days):
            day = start + timedelta(days=k)
            res = _simulate_day(uni, day, settings.business_tz)
            writer.commit()
            writer.stage(day, res)
            if res.anomalies is not None:
                anomalies.append(res.anomalies)
            summary.add_day(day, res)
        writer.commit()
        summary.anomalies = merge_anomalies(truth / "anomalies.parquet", anomalies, summary.days)
    summary.seconds = time.perf_counter() - t0
    return summary
