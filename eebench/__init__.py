"""eebench: train, calibrate and evaluate early-exit BERT models on one footing."""

__version__ = "0.1.0"
