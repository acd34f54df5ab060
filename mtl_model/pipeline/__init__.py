"""Running it: the nightly steps the DAG calls, the embedded Airflow, the dbt command line, the
``tandem`` CLI and the demo."""
