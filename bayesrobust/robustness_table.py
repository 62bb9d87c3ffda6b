"""``python -m bayesrobust.robustness_table``: the command ``bayesrobust table`` (:mod:`bayesrobust.cli.table`)."""

from .cli.table import main

if __name__ == "__main__":
    main(prog_name="python -m bayesrobust.robustness_table")
