"""``python -m bayesrobust.pipeline``: the command ``bayesrobust pipeline`` (:mod:`bayesrobust.cli.pipeline`)."""

from .cli.pipeline import main

if __name__ == "__main__":
    main(prog_name="python -m bayesrobust.pipeline")
