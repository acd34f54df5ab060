"""Learning: features and samples, the networks, loss weighting, optimisers, metrics, the fit loop,
the nightly train step, its baselines and the model registry. Reads Parquet exports, writes model
versions; never opens the DuckDB warehouse (it may run on a GPU worker)."""
