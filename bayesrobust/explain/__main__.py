"""``python -m bayesrobust.explain``: the same command as ``bayesrobust explain`` (:mod:`bayesrobust.cli.explain`)."""

__all__ = ["main"]

if __name__ == "__main__":  # Ctrl-C while the libraries load is "Aborted.", not a traceback
    from ..__main__ import run
    run("explain", prog_name="python -m bayesrobust.explain")
else:
    from ..cli.explain import main
