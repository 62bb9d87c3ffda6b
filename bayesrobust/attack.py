"""``python -m bayesrobust.attack``: the command ``bayesrobust attack`` (:mod:`bayesrobust.cli.attack`)."""

from .cli.attack import main

if __name__ == "__main__":
    main(prog_name="python -m bayesrobust.attack")
