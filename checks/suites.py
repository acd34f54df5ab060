"""Expectation suites, one per table, over the slice of the table for one day (`ds`).

Each suite is a list of GX expectations; the runner reads the day's rows from DuckDB and validates
them as a pandas DataFrame (GX's SQL source on DuckDB is broken, see STACK_NOTES).
"""

from __future__ import annotations

import great_expectations.expectations as gxe

EVENT_TYPES = ["impression", "view", "click", "cart", "fav", "purchase"]


def suites() -> dict[str, list[gxe.Expectation]]:
    """Table name → expectations for that table's rows of one day."""
    return {
        "stg_events": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="event_id"),
            gxe.ExpectColumnValuesToBeUnique(column="event_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=EVENT_TYPES),
        ],
        "users": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToBeUnique(column="user_id"),
        ],
        "items": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToBeUnique(column="item_id"),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0, mostly=0.99),
        ],
        "interactions": [
            gxe.ExpectTableRowCountToBeBetween(min_value=1),
            gxe.ExpectColumnValuesToNotBeNull(column="exposure_id"),
            gxe.ExpectColumnValuesToBeUnique(column="exposure_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
            gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
            gxe.ExpectColumnValuesToBeInSet(column="click", value_set=[0, 1]),
            gxe.ExpectColumnValuesToBeInSet(column="cart", value_set=[0, 1]),
            gxe.ExpectColumnValuesToBeInSet(column="purchase", value_set=[0, 1]),
            # label rates in a plausible range: a broken tracker gives 0, a bot flood gives ~1
            gxe.ExpectColumnMeanToBeBetween(column="click", min_value=0.001, max_value=0.6),
            gxe.ExpectColumnMeanToBeBetween(column="purchase", min_value=0.0, max_value=0.2),
        ],
    }
