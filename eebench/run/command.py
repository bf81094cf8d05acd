"""The run folder a command works on, opened the one way every command opens it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from eebench.run.folder import Run, open_run


@contextmanager
def command_run(folder: str | Path, what: str, data_dir: str | None = None, data_root: str | Path | None = None,
                device: str | None = None, data_name: str | None = None) -> Iterator[Run]:
    """The run ``folder`` for the command ``what`` (evaluate, calibrate, speed, report): the data root
    chosen for this command (``--data-root``, else the run's remembered one, else EEBENCH_DATA), the folder
    opened (on other data with ``data_dir``, stored under ``<split>@<data_name>``), the device checked
    (a device this machine lacks is an error even when nothing needs it), and the folder owned by this
    process until the block ends (a second writer waits or is refused)."""
    from eebench.device import resolve_device
    from eebench.paths import set_data_root
    from eebench.run.ownership import owned

    set_data_root(data_root)
    run = open_run(folder, data_dir, data_name)
    resolve_device(device)
    with owned(run.owner_dir, what=what):
        yield run
