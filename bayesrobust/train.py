"""``python -m bayesrobust.train``: the command ``bayesrobust train`` (:mod:`bayesrobust.cli.train`)."""

from .cli.train import main

if __name__ == "__main__":
    main(prog_name="python -m bayesrobust.train")
