"""``python -m bayesrobust.attack``: the command ``bayesrobust attack`` (:mod:`bayesrobust.cli.attack`)."""

__all__ = ["main"]

if __name__ == "__main__":  # Ctrl-C while the libraries load is "Aborted.", not a traceback
    from .__main__ import run
    run("attack", prog_name="python -m bayesrobust.attack")
else:
    from .cli.attack import main
