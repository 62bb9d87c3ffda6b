"""``python -m bayesrobust.robustness_table``: the command ``bayesrobust table`` (:mod:`bayesrobust.cli.table`)."""

__all__ = ["main"]

if __name__ == "__main__":  # Ctrl-C while the libraries load is "Aborted.", not a traceback
    from .__main__ import run
    run("table", prog_name="python -m bayesrobust.robustness_table")
else:
    from .cli.table import main
