"""``python -m bayesrobust.analyze``: the command ``bayesrobust analyze`` (:mod:`bayesrobust.cli.analyze`)."""

__all__ = ["main"]

if __name__ == "__main__":  # Ctrl-C while the libraries load is "Aborted.", not a traceback
    from .__main__ import run
    run("analyze", prog_name="python -m bayesrobust.analyze")
else:
    from .cli.analyze import main
