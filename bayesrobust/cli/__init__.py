"""The ``bayesrobust`` command group: one sub-command per stage of an experiment.

::

    bayesrobust train --model fullBNN          # the quick preset, written under ./results
    bayesrobust attack --model fullBNN --attack fgsm
    bayesrobust explain --model fullBNN --attack-run ...
    bayesrobust analyze ; bayesrobust plot ; bayesrobust pipeline ; bayesrobust table --model baseNN
    bayesrobust report                         # OUT/report.html and OUT/report.md
    bayesrobust faithfulness                   # insertion/deletion, localisation, randomisation checks
    bayesrobust diagnose --model fullBNN --inference sghmc ; bayesrobust evaluate --data-root ../shared/datasets

``python -m bayesrobust.train`` (and ``.attack``, ``.explain``, ``.analyze``, ``.plot``, ``.pipeline``,
``.robustness_table``) run the same commands. Every command parses its options, calls the library
(:mod:`bayesrobust.stages`) and prints; it never re-implements a stage.
"""

from __future__ import annotations

import click

from . import analyze, attack, diagnose, evaluate, explain, faithfulness, pipeline, plot, report, sweep, table, train

COMMANDS = {"train": train.main, "attack": attack.main, "explain": explain.main, "analyze": analyze.main,
            "plot": plot.main, "pipeline": pipeline.main, "table": table.main, "report": report.main,
            "faithfulness": faithfulness.main, "sweep": sweep.main}
COMMANDS.update({"diagnose": diagnose.main, "evaluate": evaluate.main})


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, commands=COMMANDS)
@click.version_option(package_name="bayesrobust")
def main() -> None:
    """Bayesian-first probabilistic robustness: train, attack, explain, analyze and plot."""


__all__ = ["COMMANDS", "main"]
