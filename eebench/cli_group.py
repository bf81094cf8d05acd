"""The command group behind `eebench`: a usage mistake (a missing argument, a value of the wrong type,
an unknown option or command) is one line naming the command and how to get help, exit code 2, like
every other error eebench reports, instead of the boxed usage text; the options several commands
share; and the wrapper that turns a UserError (or a full disk) into one line, exit code 2."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from typer.core import TyperGroup

from eebench.console import console
from eebench.errors import UserError

# typer ships its own copy of click; its public BadParameter derives from that copy's UsageError and
# ClickException, which typer does not export by name.
_BASES = {cls.__name__: cls for cls in typer.BadParameter.__mro__}
UsageError, ClickException = _BASES["UsageError"], _BASES["ClickException"]


class OneLineErrors(TyperGroup):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        from eebench.paths import forget_data_root

        forget_data_root()  # each command chooses its own data root (--data-root, the run's, EEBENCH_DATA)
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except UsageError as err:
            if type(err).__name__ == "NoArgsIsHelpError" and err.ctx is not None:  # bare `eebench`: the help
                print(err.ctx.get_help())
                sys.exit(2)
            command = err.ctx.command_path if err.ctx is not None else (prog_name or "eebench")
            message = " ".join(err.format_message().split()).rstrip(".")
            print(f"error: {command}: {message}; see {command} --help", file=sys.stderr)
            sys.exit(2)
        except ClickException as err:
            print(f"error: {' '.join(err.format_message().split())}", file=sys.stderr)
            sys.exit(err.exit_code)
        except typer.Abort:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def switches_show_no_type() -> None:
    """typer prints a value type on every option, ``<bool>`` on switches that take no value too,
    which reads as "--overwrite true"; switches show none."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is not None:
        TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else shown(self, ctx)


RunArg = Annotated[Path, typer.Argument(help="A run folder written by `eebench finetune`, e.g. results/quickstart.")]
DataDirOpt = Annotated[Optional[str], typer.Option(
    "--data-dir", help="Folder of the task's files (GLUE TSV / ELUE TSV / CS224N); overrides task.data_dir.")]
DeviceOpt = Annotated[Optional[str], typer.Option(
    "--device", help="Where the model runs: cpu, cuda, cuda:N, mps (default: the GPU when there is one, else "
                     "the CPU); recorded in the run.")]
ReadingOpt = Annotated[Optional[str], typer.Option(
    "--reading", help="Read the table's cells under a named alternative to its default rules (a table's "
    "readings are listed in docs/tables.md, e.g. romebert-glue-test: accuracy, fixed-drop); its files are "
    "written as <id>-<reading>.*.")]
DataRootOpt = Annotated[Optional[Path], typer.Option(
    "--data-root", envvar="EEBENCH_DATA", show_envvar=True,
    help="Data root searched before the hub for recipes that name only their task: DIR/<TASK>/ "
         "(e.g. DIR/SST-2/dev.tsv; also DIR/glue/<TASK>/, ELUE tasks in DIR/elue/<TASK>/, CS224N files in "
         "DIR/cs224n/).")]
BootstrapOpt = Annotated[Optional[int], typer.Option(
    "--bootstrap", min=0, metavar="N",
    help="Resamples of the bootstrap intervals on every metric and time% (default: the recipe's "
         "output.bootstrap, 1000); 0: no intervals.")]


def user_errors(fn):
    """Turn a UserError into one red line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as err:
            from eebench.errors import BUSY_EXIT, Busy

            console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(BUSY_EXIT if isinstance(err, Busy) else 2) from None
        except OSError as err:
            line = os_error_line(err)
            if line is None:
                raise
            console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as err:  # libraries that wrap a full disk in their own error (safetensors, torch)
            if "No space left on device" not in str(err):
                raise
            console.print("[bold red]error:[/] no space left on the device while writing; free some space (or set "
                          "output.root on another disk) and run the command again", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]; files already written are complete (written atomically)")
            raise typer.Exit(130) from None

    return wrapper


def os_error_line(err: OSError) -> str | None:
    """One line for the faults of the machine rather than of eebench: a full disk, a read-only or
    unwritable folder, a file where a folder should be. None for anything else (a real bug)."""
    import errno

    where = err.filename or "a file eebench was writing"
    fixes = {
        errno.ENOSPC: "no space left on the device; free some space (or set output.root on another disk) and "
                      "run the command again: files already written are complete",
        errno.EDQUOT: "disk quota exceeded; free some space and run the command again",
        errno.EROFS: "read-only file system; set output.root to a writable folder",
        errno.EACCES: "permission denied; set output.root to a folder you can write",
        errno.ENOTDIR: "a file is in the way where a folder should be; move it or set output.root elsewhere",
        errno.EISDIR: "a folder is in the way where a file should be; move it",
    }
    fix = fixes.get(err.errno)
    return None if fix is None else f"{where}: {fix}"


def show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"eebench {version('eebench')}")
        except PackageNotFoundError:
            print("eebench (not installed: run `pip install -e .` in the repository)")
        raise typer.Exit()
