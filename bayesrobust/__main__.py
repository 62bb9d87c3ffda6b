"""``python -m bayesrobust`` (the ``bayesrobust`` command group), and :func:`run`, which starts every command.

Loading the commands imports torch, Pyro, Zennit and Captum, which takes seconds; Ctrl-C then would end
in a traceback from the import machinery. :func:`run` imports them itself, so an interrupt at any moment
ends with ``Aborted.`` and exit status 130 (after that, :func:`bayesrobust.cli.options.friendly_errors`
applies the rule). This module imports nothing heavy.
"""

from __future__ import annotations

import sys

from .errors import INTERRUPT_EXIT_CODE


def run(command: str | None = None, prog_name: str | None = None) -> None:
    """Run the command group (``command=None``) or one of its commands, e.g. ``run("train")``."""
    try:
        from .cli import COMMANDS, main
        if command is None and len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
            COMMANDS[sys.argv[1]]  # load the sub-command here, where an interrupt is handled
        entry = main if command is None else COMMANDS[command]
    except KeyboardInterrupt:
        sys.stderr.write("\nAborted.\n")
        sys.exit(INTERRUPT_EXIT_CODE)
    entry(prog_name=prog_name)


if __name__ == "__main__":
    run(prog_name="python -m bayesrobust")
