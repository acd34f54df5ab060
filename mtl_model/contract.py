"""The landing-zone contract, defined once: the event vocabulary and the schemas of landed files.

Everything that needs the list of event types reads it from here: the adapters and the simulator, the
dbt project (passed as the ``event_types`` var by :meth:`mtl_model.config.Settings.dbt_vars`) and the
GX suites. See DESIGN.md, "Landing-zone contract".
"""

from __future__ import annotations

import polars as pl

# Every event type a landed file may carry (anything else is quarantined as unknown_event_type).
EVENT_TYPES: tuple[str, ...] = ("impression", "view", "click", "cart", "fav", "purchase")
SCENES: tuple[str, ...] = ("home", "search")
# the event types that make each task's positive label (dbt_project/models/marts/interactions.sql):
# a view-only source's views are its click task
LABEL_EVENTS: dict[str, tuple[str, ...]] = {
    "click": ("click", "view"),
    "cart": ("cart",),
    "purchase": ("purchase",),
    "fav": ("fav",),
}

EVENTS_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(),
    "event_time": pl.Datetime("us", "UTC"),
    "user_id": pl.String(),
    "item_id": pl.String(),
    "event_type": pl.String(),
    "scene": pl.String(),
    "query": pl.String(),
    "position": pl.Int32(),
    "session_id": pl.String(),
    "price": pl.Float64(),
    "category_id": pl.String(),
}
ITEMS_SCHEMA: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "category_id": pl.String(),
    "category_path": pl.String(),
    "brand": pl.String(),
    "price": pl.Float64(),
    "title": pl.String(),
    "in_stock": pl.Boolean(),
}
USERS_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.String(),
    "signup_date": pl.Date(),
    "region": pl.String(),
    "device": pl.String(),
}
LANDING_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "events": EVENTS_SCHEMA,
    "items": ITEMS_SCHEMA,
    "users": USERS_SCHEMA,
}
