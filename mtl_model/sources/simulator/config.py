"""The simulator's configuration (:class:`SimConfig`): size, behaviour and the anomaly / bad-data switches."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SimConfig", "ANOMALY_RATES", "BAD_DATA_RATES"]

# the switches of planted anomalies and of bad data (docs/simulator.md)
ANOMALY_RATES = ("fraud_rate", "click_spam_rate", "broken_item_rate", "broken_scene_rate")
BAD_DATA_RATES = (
    "duplicate_rate",
    "null_key_rate",
    "unknown_type_rate",
    "bad_price_rate",
    "future_time_rate",
    "late_rate",
    "schema_drift_rate",
    "empty_day_rate",
    "truncated_csv_rate",
)


@dataclass(frozen=True)
class SimConfig:
    n_users: int = 2000
    n_items: int = 1000
    n_categories: int = 20  # at most n_items are used
    sessions_per_user: float = 1.2  # mean sessions per user per day (heavy-tailed user activity)
    impressions_per_session: int = 10
    search_share: float = 0.3  # share of sessions in the search scene (others: home)
    latent_dim: int = 8
    bot_rate: float = 0.005  # share of users that are click-farm bots (0 disables)
    seed: int = 42
    # --- realism
    weekend_boost: float = 0.0  # human sessions on Saturdays and Sundays are (1 + this) times as many
    # --- planted anomalies (docs/simulator.md); per day
    fraud_rate: float = 0.0  # new fraudulent buyer accounts, as a share of n_users (at least 1 if > 0)
    click_spam_rate: float = 0.0  # share of items whose clicks are spammed (at least 1 if > 0)
    broken_item_rate: float = 0.0  # share of items whose clicks are lost (at least 1 if > 0)
    broken_scene_rate: float = 0.0  # probability that one scene loses all its clicks
    # --- bad data (docs/simulator.md); off by default
    duplicate_rate: float = 0.0
    null_key_rate: float = 0.0
    unknown_type_rate: float = 0.0
    bad_price_rate: float = 0.0
    future_time_rate: float = 0.0
    late_rate: float = 0.0  # share of sessions
    schema_drift_rate: float = 0.0  # probability per day
    empty_day_rate: float = 0.0  # probability per day
    truncated_csv_rate: float = 0.0  # probability per day (with write_csv)
    write_csv: bool = False  # also write the events as CSV (csv/events/ds=D/part-0.csv)

    def __post_init__(self) -> None:
        if self.n_users < 1 or self.n_items < 1 or self.n_categories < 1 or self.latent_dim < 1:
            raise ValueError("n_users, n_items, n_categories and latent_dim must be >= 1")
        if self.impressions_per_session < 1 or self.sessions_per_user < 0:
            raise ValueError("impressions_per_session must be >= 1 and sessions_per_user >= 0")
        if not (0.0 <= self.search_share <= 1.0 and 0.0 <= self.bot_rate <= 1.0):
            raise ValueError("search_share and bot_rate must be in [0, 1]")
        for name in (*ANOMALY_RATES, *BAD_DATA_RATES):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.weekend_boost < 0:
            raise ValueError("weekend_boost must be >= 0")
        if self.truncated_csv_rate > 0 and not self.write_csv:
            raise ValueError("truncated_csv_rate needs write_csv=True")

    @property
    def plants_anomalies(self) -> bool:
        return any(getattr(self, name) > 0 for name in ANOMALY_RATES)

    @property
    def injects_bad_data(self) -> bool:
        return any(getattr(self, name) > 0 for name in BAD_DATA_RATES)
