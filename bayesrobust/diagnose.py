"""``python -m bayesrobust.diagnose``: the command ``bayesrobust diagnose`` (:mod:`bayesrobust.cli.diagnose`)."""

__all__ = ["main"]

if __name__ == "__main__":  # Ctrl-C while the libraries load is "Aborted.", not a traceback
    from .__main__ import run
    run("diagnose", prog_name="python -m bayesrobust.diagnose")
else:
    from .cli.diagnose import main
