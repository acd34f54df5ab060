from datetime import UTC, date, datetime

import pytest

from mtl_model.dates import logical_date_for, resolve_run_date

TODAY = date(2026, 11, 22)


def test_conf_wins() -> None:
    logical = datetime(2026, 11, 20, 2, tzinfo=UTC)
    assert resolve_run_date({"ds": "2026-11-01"}, logical, None, today=TODAY) == date(2026, 11, 1)


def test_scheduled_run_processes_the_day_that_ended() -> None:
    logical = datetime(2026, 11, 20, 2, tzinfo=UTC)
    assert resolve_run_date({}, logical, None, today=TODAY) == date(2026, 11, 19)


def test_business_time_zone() -> None:
    # 2026-11-19 17:30 UTC is already 2026-11-20 01:30 in Shanghai: the day that ended there is the 19th
    logical = datetime(2026, 11, 19, 17, 30, tzinfo=UTC)
    assert resolve_run_date(None, logical, None, "Asia/Shanghai", today=TODAY) == date(2026, 11, 19)
    assert resolve_run_date(None, logical, None, "UTC", today=TODAY) == date(2026, 11, 18)


def test_no_logical_date_falls_back_to_run_after() -> None:
    run_after = datetime(2026, 11, 21, 3, tzinfo=UTC)
    assert resolve_run_date(None, None, run_after, today=TODAY) == date(2026, 11, 20)
    with pytest.raises(ValueError, match="cannot resolve ds"):
        resolve_run_date(None, None, None, today=TODAY)


def test_day_not_ended_is_refused() -> None:
    with pytest.raises(ValueError, match="has not ended"):
        resolve_run_date({"ds": "2026-11-22"}, None, None, today=TODAY)


def test_logical_date_round_trip() -> None:
    ds = date(2026, 3, 4)
    assert resolve_run_date(None, logical_date_for(ds), None, today=TODAY) == ds
    assert (
        resolve_run_date(None, logical_date_for(ds, "Asia/Shanghai"), None, "Asia/Shanghai", today=TODAY)
        == ds
    )
