"""``python -m bayesrobust.analyze``: the command ``bayesrobust analyze`` (:mod:`bayesrobust.cli.analyze`)."""

from .cli.analyze import main

if __name__ == "__main__":
    main(prog_name="python -m bayesrobust.analyze")
