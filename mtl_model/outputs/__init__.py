"""What a night produces: scoring (recommendations), anomalies, export and publish (the only module
that opens the DuckDB warehouse is :mod:`mtl_model.outputs.warehouse`) and the nightly report."""
