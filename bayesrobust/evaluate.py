"""``python -m bayesrobust.evaluate``: the command ``bayesrobust evaluate`` (:mod:`bayesrobust.cli.evaluate`)."""

__all__ = ["main"]

if __name__ == "__main__":  # Ctrl-C while the libraries load is "Aborted.", not a traceback
    from .__main__ import run
    run("evaluate", prog_name="python -m bayesrobust.evaluate")
else:
    from .cli.evaluate import main
