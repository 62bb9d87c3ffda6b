"""``python -m bayesrobust.explain``: the same command as ``bayesrobust explain`` (:mod:`bayesrobust.cli.explain`)."""

from ..cli.explain import main

if __name__ == "__main__":
    main(prog_name="python -m bayesrobust.explain")
