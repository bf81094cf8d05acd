"""Reports from stored results only: run reports and paper tables (never re-runs a model)."""
