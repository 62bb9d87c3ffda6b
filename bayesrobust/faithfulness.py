"""``python -m bayesrobust.faithfulness``: the command ``bayesrobust faithfulness`` (:mod:`.cli.faithfulness`)."""

__all__ = ["main"]

if __name__ == "__main__":  # Ctrl-C while the libraries load is "Aborted.", not a traceback
    from .__main__ import run
    run("faithfulness", prog_name="python -m bayesrobust.faithfulness")
else:
    from .cli.faithfulness import main
