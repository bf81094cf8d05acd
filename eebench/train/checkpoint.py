"""Resumable training state: where the loop is (stage, epoch, batch, step), the full state saved with
accelerate's ``save_state`` plus that position, the batch order reproducible from any epoch, and the
fault hook the resume tests use."""

from __future__ import annotations

import json
import os
import shutil
import signal
from dataclasses import asdict
from pathlib import Path

from eebench.io import swap_folder
from eebench.train.parallel import Parallel
from eebench.train.state import Position, TrainState


CHECKPOINT = "checkpoint"


FAULT_ENV = "EEBENCH_FAULT_AFTER_STEP"
FAULT_SIGNAL_ENV = "EEBENCH_FAULT_SIGNAL"
"""Testing hook: the main process kills itself (SIGKILL) after this many optimizer steps of the run,
as a preempted machine would; the tests use it to check that a killed run resumes exactly."""


def checkpoint_dir(run_dir: Path) -> Path | None:
    """The run's last complete checkpoint, if any (a swap cut short leaves ``checkpoint.old``)."""
    for name in (CHECKPOINT, CHECKPOINT + ".old"):
        folder = Path(run_dir) / name
        if (folder / "custom_checkpoint_0.pkl").is_file():
            return folder
    return None


def checkpoint_position(run_dir: Path) -> Position | None:
    folder = checkpoint_dir(run_dir)
    if folder is None or not (folder / "position.json").is_file():
        return None
    return Position(**json.loads((folder / "position.json").read_text()))


def save_checkpoint(accelerator, par: Parallel, state: TrainState, run_dir: Path) -> None:
    """accelerate's save_state into ``checkpoint.new``, then swapped in: a kill at any moment leaves
    the previous complete checkpoint."""
    folder = run_dir / CHECKPOINT
    new, old = folder.with_name(CHECKPOINT + ".new"), folder.with_name(CHECKPOINT + ".old")
    if par.is_main:
        shutil.rmtree(new, ignore_errors=True)
    par.barrier()
    accelerator.save_state(str(new))
    par.barrier()
    if par.is_main:
        (new / "position.json").write_text(json.dumps(asdict(state.position)))
        swap_folder(new, folder, old)
    par.barrier()


def remove_checkpoint(run_dir: Path) -> None:
    for name in (CHECKPOINT, CHECKPOINT + ".new", CHECKPOINT + ".old"):
        shutil.rmtree(Path(run_dir) / name, ignore_errors=True)


def fault_point(total_steps: int, par: Parallel) -> None:
    """The fault injection of the resume tests: after step EEBENCH_FAULT_AFTER_STEP the main process
    sends itself EEBENCH_FAULT_SIGNAL (default SIGKILL; SIGUSR2 / SIGTERM: a preemption notice)."""
    at = os.environ.get(FAULT_ENV)
    if at and par.is_main and total_steps == int(at):
        os.kill(os.getpid(), getattr(signal, os.environ.get(FAULT_SIGNAL_ENV, "SIGKILL")))
