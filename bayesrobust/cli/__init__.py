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

A command's module is imported when the command is first asked for, not with the group: the commands
between them load Captum, SciPy's statistics and Matplotlib, seconds that ``bayesrobust train`` does not need.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

import click

#: command name -> its module in this package
MODULES = {"train": "train", "attack": "attack", "explain": "explain", "analyze": "analyze", "plot": "plot",
           "pipeline": "pipeline", "table": "table", "report": "report", "faithfulness": "faithfulness",
           "sweep": "sweep", "diagnose": "diagnose", "evaluate": "evaluate"}


class _Commands(Mapping):
    """command name -> its ``click.Command``, the module imported on first access."""

    def __getitem__(self, name: str) -> click.Command:
        return importlib.import_module(f"{__name__}.{MODULES[name]}").main

    def __iter__(self) -> Iterator[str]:
        return iter(MODULES)

    def __len__(self) -> int:
        return len(MODULES)


COMMANDS = _Commands()


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(MODULES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return COMMANDS.get(name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bayesrobust")
def main() -> None:
    """Bayesian-first probabilistic robustness: train, attack, explain, analyze and plot."""


__all__ = ["COMMANDS", "MODULES", "main"]
