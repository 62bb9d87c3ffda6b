"""``python -m bayesrobust.plot``: the command ``bayesrobust plot`` (:mod:`bayesrobust.cli.plot`)."""

__all__ = ["main"]

if __name__ == "__main__":  # Ctrl-C while the libraries load is "Aborted.", not a traceback
    from .__main__ import run
    run("plot", prog_name="python -m bayesrobust.plot")
else:
    from .cli.plot import main
