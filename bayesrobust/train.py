"""``python -m bayesrobust.train``: the command ``bayesrobust train`` (:mod:`bayesrobust.cli.train`)."""

__all__ = ["main"]

if __name__ == "__main__":  # Ctrl-C while the libraries load is "Aborted.", not a traceback
    from .__main__ import run
    run("train", prog_name="python -m bayesrobust.train")
else:
    from .cli.train import main
