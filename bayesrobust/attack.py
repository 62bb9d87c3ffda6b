"""``python -m bayesrobust.attack``: the same command as ``bayesrobust attack`` (:mod:`bayesrobust.cli.attack`)."""

from .cli.attack import main

if __name__ == "__main__":
    main(prog_name="python -m bayesrobust.attack")
