"""``TANDEM_DUCKDB_MEMORY_LIMIT``: the export's DuckDB session holds at most that much memory (DuckDB
spills past it) and exports the same tables; a bad value is refused when the settings load. The
session draws no progress bar."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from mtl_model.config import SettingsError, load_settings
from mtl_model.outputs.warehouse import EXPORTS, export_day, read_warehouse
from tests.conftest import BUILT_DS, tandem_settings


def test_the_limit_reaches_the_session_and_the_export_is_the_same(built_once: Path, tmp_path: Path) -> None:
    """128 MB: this day's export needs about 50-60 MB of DuckDB's memory (48 MB ran out here, 64 MB
    ran out once in CI at 60.1 of 61.0 MiB), so the limit is twice that, not at the edge."""
    plain = tandem_settings(built_once, exports_dir=tmp_path / "a", outputs_dir=tmp_path / "oa")
    limited = plain.replace(
        duckdb_memory_limit="128MB", exports_dir=tmp_path / "b", outputs_dir=tmp_path / "ob"
    )
    with read_warehouse(limited) as con:
        limit, bar = con.execute(
            "select current_setting('memory_limit'), current_setting('enable_progress_bar')"
        ).fetchall()[0]
    assert bar is False  # no progress bar drawn into the task's log
    with read_warehouse(plain) as con:
        default = con.execute("select current_setting('memory_limit')").fetchall()[0][0]
    assert limit == "122.0 MiB" and default != limit, (limit, default)  # 128 MB in DuckDB's units
    counts = export_day(plain, BUILT_DS)
    assert export_day(limited, BUILT_DS) == counts and counts["samples"] > 0
    for name in EXPORTS:
        a = pl.read_parquet(plain.export_dir(BUILT_DS) / f"{name}.parquet", hive_partitioning=False)
        b = pl.read_parquet(limited.export_dir(BUILT_DS) / f"{name}.parquet", hive_partitioning=False)
        assert a.equals(b, null_equal=True), name


@pytest.mark.parametrize("value", ["lots", "0GB", "3 G", "-1GB"])
def test_a_bad_limit_is_refused_when_the_settings_load(monkeypatch, value: str) -> None:
    monkeypatch.setenv("TANDEM_DUCKDB_MEMORY_LIMIT", value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value).startswith(f"TANDEM_DUCKDB_MEMORY_LIMIT={value!r}: ") and "\n" not in str(err.value)
    monkeypatch.setenv("TANDEM_DUCKDB_MEMORY_LIMIT", "3GB")
    assert load_settings().duckdb_memory_limit == "3GB"


def test_every_session_opens_without_a_progress_bar(tmp_path: Path) -> None:
    """mtl_model.duck.connect, the library's one opener (tests/test_architecture.py): in memory and on
    a file, no progress bar; the memory limit as an option."""
    from mtl_model.duck import connect

    for con in (connect(), connect(tmp_path / "w.duckdb", memory_limit="256MB")):
        with con:
            bar, limit = con.execute(
                "select current_setting('enable_progress_bar'), current_setting('memory_limit')"
            ).fetchall()[0]
            assert bar is False, limit
    assert limit == "244.1 MiB"  # 256 MB in DuckDB's units


def test_the_window_is_exported_day_by_day_as_one_copy_of_the_view(built_once: Path, tmp_path: Path) -> None:
    """samples.parquet is written one day at a time, then merged: the same rows in the same order as
    one COPY of ``training_samples``, every day of the window in it, and no day file left behind."""
    settings = tandem_settings(built_once, exports_dir=tmp_path / "e", outputs_dir=tmp_path / "o")
    export_day(settings, BUILT_DS)
    folder = settings.export_dir(BUILT_DS)
    with read_warehouse(settings) as con:
        con.execute("set variable tandem_ds = ?", [BUILT_DS])
        con.execute(
            "copy (select * from training_samples) to ? (format parquet)", [str(tmp_path / "whole.parquet")]
        )
    whole = pl.read_parquet(tmp_path / "whole.parquet")
    samples = pl.read_parquet(folder / "samples.parquet", hive_partitioning=False)
    assert samples.equals(whole, null_equal=True) and samples.height > 0
    assert samples["ds"].n_unique() > 1  # several days, each copied on its own
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name}.parquet" for name in EXPORTS)
