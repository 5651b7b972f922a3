"""``rnnkit`` (the console script) and ``python -m rnnkit``: the command line.

The command line's module takes a moment to import (typer, rich); a Ctrl-C pressed then ends the
command quietly with status 130, as one pressed later does, instead of printing a traceback."""

from __future__ import annotations


def main() -> None:
    try:
        from .cli import main as run_command_line
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    run_command_line()


if __name__ == "__main__":
    main()
