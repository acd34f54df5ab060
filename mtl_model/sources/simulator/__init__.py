"""The simulator behind ``tandem simulate``, by concern; the entry point is :mod:`mtl_model.sources.simulate`.

config (SimConfig) < ids < universe (catalogue, users, tastes) < day (the funnel) < anomalies, bad_data
< writing (landing and truth folders). The specification is docs/simulator.md.
"""
