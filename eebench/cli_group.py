"""The command group behind `eebench`: a usage mistake (a missing argument, a value of the wrong type,
an unknown option or command) is one line naming the command and how to get help, exit code 2, like
every other error eebench reports, instead of the boxed usage text."""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

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
