"""Who may write a run folder: one writer at a time. ``owned`` holds a lock file beside the folder
(``.<run>.lock``, filelock) and an owner note (``.<run>.owner``: host, pid, start, command) that a
second writer is shown; a note left by a killed writer is reported and taken over, its orphaned
``.*.tmp`` files removed. An --overwrite builds in ``.<run>.overwrite/`` and ``swap_in`` replaces the
old run with two renames (a crash between them is recovered by the next writer)."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from pathlib import Path

from eebench.errors import Busy, UserError
from eebench.io import read_json, recover_swap, swap_folder, write_json

def lock_path(folder: Path) -> Path:
    folder = Path(folder)
    return folder.parent / f".{folder.name}.lock"


def owner_path(folder: Path) -> Path:
    folder = Path(folder)
    return folder.parent / f".{folder.name}.owner"


def staging_dir(folder: Path) -> Path:
    """Where an --overwrite builds the new run while the old one stays in place."""
    folder = Path(folder)
    return folder.parent / f".{folder.name}.overwrite"


@contextlib.contextmanager
def owned(folder: Path, par=None, what: str = "write"):
    """Own the run folder for the duration. A second eebench writing the same run gets one line naming
    the owner (host, pid, command) and changes nothing. Under several processes only the main one
    takes the lock; the others learn the outcome from it."""
    from filelock import FileLock, Timeout

    folder = Path(folder)
    main = par is None or par.is_main
    lock = FileLock(str(lock_path(folder))) if main else None
    acquired, previous = True, None
    if lock is not None:
        try:
            lock_path(folder).parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UserError(f"{folder.parent} is not a folder (a file is in the way); set output.root to a "
                            f"folder") from None
        try:
            _acquire(lock, lock_path(folder))
        except Timeout:
            acquired, previous = False, owner_note(folder)
    if par is not None and not par.from_main(acquired) or not acquired:
        who = describe_owner(previous) if previous else "another eebench process"
        raise Busy(f"{folder} is being written by {who}; wait for it to finish, or pick another name "
                   f"with --set output.run_name=NAME")
    stale = None
    try:
        if lock is not None:
            stale = owner_note(folder)  # the lock was free, yet a note is left: its writer died
            write_json(owner_path(folder), {"host": socket.gethostname(), "pid": os.getpid(),
                                            "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300],
                                            "doing": what})
            if stale:
                from eebench.console import console

                console.print(f"[yellow]note:[/] the previous writer of {folder} ({describe_owner(stale)}) ended "
                              f"without releasing it (killed?); taking it over")
            recover_swap(folder)
            remove_orphans(folder)
    except BaseException:
        lock_path(folder).unlink(missing_ok=True)
        lock.release()
        raise
    try:
        yield stale
    finally:
        if lock is not None:
            owner_path(folder).unlink(missing_ok=True)
            lock_path(folder).unlink(missing_ok=True)  # still held: nobody can take it in between
            lock.release()


def _acquire(lock, path: Path) -> None:
    """Take ``lock`` without waiting. The file is removed on release (no lock file stays behind),
    so a writer that opened it just before it was removed holds a lock on a file nobody sees: it
    checks that the file it locked is the one at the path, and tries again when it is not."""
    from filelock import Timeout

    for _ in range(20):
        lock.acquire(timeout=0)
        fd = getattr(getattr(lock, "_context", None), "lock_file_fd", None)
        try:
            if fd is None or os.fstat(fd).st_ino == os.stat(path).st_ino:
                return
        except FileNotFoundError:
            pass
        lock.release()
    raise Timeout(str(path))


def owner_note(folder: Path) -> dict | None:
    try:
        return read_json(owner_path(folder))
    except (OSError, ValueError):
        return None


def owner(folder: Path) -> dict | None:
    """The note of the process that holds the run folder now, or None when nobody does."""
    from filelock import FileLock, Timeout

    if not lock_path(folder).is_file():
        return None
    lock = FileLock(str(lock_path(folder)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return owner_note(folder) or {}
    lock_path(folder).unlink(missing_ok=True)  # a left-over file from an older eebench: nobody holds it
    lock.release()
    return None


def describe_owner(note: dict | None) -> str:
    if not note:
        return "another eebench process"
    return (f"eebench pid {note.get('pid')} on {note.get('host')} since {note.get('since')} "
            f"({note.get('command', '')})")


def remove_orphans(folder: Path) -> int:
    """Temporary files a killed writer left (eebench.io writes ``.<name>.*.tmp`` then renames)."""
    folder = Path(folder)
    count = 0
    for base in (folder, staging_dir(folder)):
        if base.is_dir():
            for tmp in base.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                count += 1
    return count


def swap_in(staging: Path, folder: Path) -> None:
    """Replace ``folder`` by ``staging``: two renames, the old run removed only afterwards. A kill
    between the renames leaves ``.<run>.replaced``, which the next owner moves back or removes."""
    swap_folder(staging, folder)
