"""Preemption: a cluster that takes a job's GPUs back signals it first (Slurm through submitit: SIGUSR2
some seconds before the end; a plain `kill`, `scancel` or torch's distributed launcher shutting its
ranks down: SIGTERM). While training, either signal is noted; the loop then checkpoints after the
step in progress and stops as an interrupted run (status.json: ``interrupted``). The requeued job
(`eebench finetune --if-missing`, what a table's cell runs) or `eebench resume RUN` continues from that
step and ends bitwise equal to a run never stopped (tests/test_preemption.py)."""

from __future__ import annotations

import signal
import threading

SIGNALS = ("SIGUSR2", "SIGTERM")


class Preempted(KeyboardInterrupt):
    """Training stopped at a step after a preemption signal; its checkpoint is saved. A KeyboardInterrupt
    so that everything that handles Ctrl-C (the run's status, the one-line message) handles it too."""


class Preemption:
    """``with Preemption() as preemption:`` notes SIGUSR2 / SIGTERM (the previous handlers come back at
    the end); ``due(...)`` says after each step whether to checkpoint and stop. Signal handlers can
    only be set in the main thread; elsewhere (a worker thread's run) nothing is noted."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict = {}

    def __enter__(self) -> "Preemption":
        if threading.current_thread() is threading.main_thread():
            for name in SIGNALS:
                number = getattr(signal, name, None)  # SIGUSR2 does not exist on Windows
                if number is not None:
                    self._previous[number] = signal.signal(number, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)

    def _note(self, number, frame) -> None:
        self.signal = signal.Signals(number).name

    def due(self, par, log_step: bool) -> bool:
        """Whether to checkpoint and stop after this step. One process: as soon as it was signalled.
        Several: every process must stop at the same step, so they agree at the next logging step (which
        reads the device anyway) by summing who was signalled; a step in between adds no collective."""
        if not par.active:
            return self.signal is not None
        if not log_step:
            return False
        return par.sum_floats({"preempted": float(self.signal is not None)})["preempted"] > 0
