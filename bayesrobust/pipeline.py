"""``python -m bayesrobust.pipeline``: the command ``bayesrobust pipeline`` (:mod:`bayesrobust.cli.pipeline`)."""

__all__ = ["main"]

if __name__ == "__main__":  # Ctrl-C while the libraries load is "Aborted.", not a traceback
    from .__main__ import run
    run("pipeline", prog_name="python -m bayesrobust.pipeline")
else:
    from .cli.pipeline import main
