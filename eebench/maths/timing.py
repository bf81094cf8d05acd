"""time% and speed-up, one definition for every report: with L layers and a mean exit layer m (or a
measured time against the full model), time% = 100 · m / L and speed-up = L / m."""

from __future__ import annotations


def time_and_speedup(mean_layer, n_layers: int) -> dict:
    """Works on numbers and numpy arrays alike."""
    return {"time_pct": 100.0 * mean_layer / n_layers, "speedup": n_layers / mean_layer}


def measured(t_engine: float, t_full: float) -> dict:
    """Measured time% and speed-up of the engine against the full model (seconds)."""
    return {"time_pct": 100.0 * t_engine / t_full, "speedup": t_full / t_engine}
