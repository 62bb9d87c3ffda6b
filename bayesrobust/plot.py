"""``python -m bayesrobust.plot``: the command ``bayesrobust plot`` (:mod:`bayesrobust.cli.plot`)."""

from .cli.plot import main

if __name__ == "__main__":
    main(prog_name="python -m bayesrobust.plot")
