"""Tandem: nightly multi-task recommendations on Airflow, dbt/DuckDB, Great Expectations and PyTorch."""

__version__ = "0.1.0"
