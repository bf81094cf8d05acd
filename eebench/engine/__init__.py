"""The real early-exit engine and its clock, apart from the command that runs them (eebench.pipeline.speed):

* ``core``: the engine, which stops computing for the examples that exit (batch 1, or batched with
  row compaction), its decisions made by the same policy steps as the offline simulation;
* ``clock``: wall-clock measurement of the engine against the full model (stream protocol at batch
  1, length-sorted batches), synchronised on every device."""

from eebench.engine.core import EarlyExitEngine, keep_rows

__all__ = ["EarlyExitEngine", "keep_rows"]
