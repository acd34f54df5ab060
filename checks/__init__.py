"""Data checks: Great Expectations suites over one day's tables, and the runner that fails loudly."""
