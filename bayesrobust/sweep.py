"""``python -m bayesrobust.sweep``: the command ``bayesrobust sweep`` (:mod:`bayesrobust.cli.sweep`)."""

__all__ = ["main"]

if __name__ == "__main__":  # Ctrl-C while the libraries load is "Aborted.", not a traceback
    from .__main__ import run
    run("sweep", prog_name="python -m bayesrobust.sweep")
else:
    from .cli.sweep import main
