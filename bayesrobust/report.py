"""``python -m bayesrobust.report``: the command ``bayesrobust report`` (:mod:`bayesrobust.cli.report`)."""

__all__ = ["main"]

if __name__ == "__main__":  # Ctrl-C while the libraries load is "Aborted.", not a traceback
    from .__main__ import run
    run("report", prog_name="python -m bayesrobust.report")
else:
    from .cli.report import main
