"""Expectation suites, one per table, over the slice of the table for one day (`ds`).

Each expectation carries a severity in its meta: ``error`` (the default) stops the night before
training and publishing; ``warning`` is recorded and reported, and the night goes on. The runner
reads the day's rows from DuckDB and validates them as pandas DataFrames (GX's SQL source on DuckDB
is broken, see STACK_NOTES).
"""

from __future__ import annotations

import great_expectations.expectations as gxe

from mtl_model.contract import EVENT_TYPES

WARN = {"severity": "warning"}

# exact column sets: schema drift upstream shows here by name
COLUMNS = {
    "stg_events": [
        "event_id",
        "event_time",
        "user_id",
        "item_id",
        "event_type",
        "scene",
        "query",
        "position",
        "session_id",
        "price",
        "category_id",
        "ds",
        "event_date",
        "is_late",
    ],
    "users": ["ds", "user_id", "signup_date", "region", "device", "events", "sessions"],
    "items": ["ds", "item_id", "category_id", "category_path", "brand", "price", "title", "in_stock"],
    "interactions": [
        "exposure_id",
        "ds",
        "exposed_at",
        "session_id",
        "user_id",
        "item_id",
        "category_id",
        "scene",
        "query",
        "position",
        "price",
        "exposure",
        "click",
        "cart",
        "purchase",
        "fav",
    ],
}
# what an interactions row is (dbt_project/models/marts/interactions.sql); real exposures are all but sampled
EXPOSURES = ["impression", "view", "implied", "sampled"]


def volume(median: float | None) -> list[gxe.Expectation]:
    """Row count within ½× … 2× of the trailing 7-day median (a warning; nothing when no history)."""
    if not median:
        return []
    return [
        gxe.ExpectTableRowCountToBeBetween(
            min_value=int(median * 0.5), max_value=int(median * 2) + 1, meta=WARN
        )
    ]


def suites(medians: dict[str, float | None], staged_rows: int) -> dict[str, list[gxe.Expectation]]:
    """Table name → expectations for that table's rows of one day.

    ``medians``: the trailing 7-day median of each table's daily row count; ``staged_rows``: the
    day's staged events, to bound the quarantine."""
    return {
        "stg_events": [
            gxe.ExpectTableColumnsToMatchSet(column_set=COLUMNS["stg_events"], exact_match=True),
            gxe.ExpectTableRowCountToBeBetween(min_value=1),  # the day is present (freshness)
            gxe.ExpectColumnValuesToNotBeNull(column="event_id"),
            gxe.ExpectColumnValuesToBeUnique(column="event_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, max_value=1e7),
            # most events arrive on time; a flood of late ones means a stuck upstream
            gxe.ExpectColumnMeanToBeBetween(column="is_late", max_value=0.05, meta=WARN),
            *volume(medians.get("stg_events")),
        ],
        "stg_events_quarantine": [
            # at most 1% of the day quarantined, else someone should look (the rows are kept)
            gxe.ExpectTableRowCountToBeBetween(max_value=max(int(staged_rows * 0.01), 10), meta=WARN),
        ],
        "users": [
            gxe.ExpectTableColumnsToMatchSet(column_set=COLUMNS["users"], exact_match=True),
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToBeUnique(column="user_id"),
            *volume(medians.get("users")),
        ],
        "items": [
            gxe.ExpectTableColumnsToMatchSet(column_set=COLUMNS["items"], exact_match=True),
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToBeUnique(column="item_id"),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, max_value=1e7, mostly=0.99),
            gxe.ExpectColumnValuesToNotBeNull(column="category_id", mostly=0.95, meta=WARN),
            *volume(medians.get("items")),
        ],
        "interactions": [
            gxe.ExpectTableColumnsToMatchSet(column_set=COLUMNS["interactions"], exact_match=True),
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="exposure_id"),
            gxe.ExpectColumnValuesToBeUnique(column="exposure_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToBeInSet(column="click", value_set=[0, 1]),
            gxe.ExpectColumnValuesToBeInSet(column="cart", value_set=[0, 1]),
            gxe.ExpectColumnValuesToBeInSet(column="purchase", value_set=[0, 1]),
            gxe.ExpectColumnValuesToBeInSet(column="fav", value_set=[0, 1]),
            gxe.ExpectColumnValuesToBeInSet(column="exposure", value_set=EXPOSURES),
            gxe.ExpectColumnValuesToBeBetween(column="position", min_value=1, mostly=0.99),
            # label rates in a plausible range: broken tracking gives 0, a bot flood gives ~1
            gxe.ExpectColumnMeanToBeBetween(column="click", min_value=0.001, max_value=0.6),
            gxe.ExpectColumnMeanToBeBetween(column="purchase", min_value=0.0, max_value=0.2),
            gxe.ExpectColumnMeanToBeBetween(column="purchase", min_value=0.0001, meta=WARN),
            *volume(medians.get("interactions")),
        ],
    }
