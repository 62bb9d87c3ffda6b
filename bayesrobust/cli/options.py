"""What the commands share: their common options (defined once, with the same defaults everywhere), the
translation of library input errors into a one-line ``Error: ...`` and exit status 1, and logging set-up.

Every command parses its options, makes one call to :mod:`bayesrobust.stages` (or
:class:`bayesrobust.Experiment`) and prints the summary it returns.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..choices import AttackName, Inference, Model, Norm, PosteriorMode
from ..data import DataNotFoundError
from ..paths import DEFAULT_OUT, DEFAULT_PRESET, OUT_ENV
from ..presets import PRESETS

USER_ERRORS = (ValueError, FileNotFoundError, DataNotFoundError, KeyError, IndexError)
CONTEXT = {"help_option_names": ["-h", "--help"]}


def friendly_errors(func: Callable) -> Callable:
    """Turn the library's input errors into ``Error: <message>`` and exit status 1, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as err:
            message = err.args[0] if err.args else str(err)
            raise click.ClickException(str(message)) from err
    return wrapper


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pyro").setLevel(logging.WARNING)


preset_option = click.option("--preset", default=DEFAULT_PRESET, show_default=True, type=click.Choice(list(PRESETS)),
                             help="Named experiment settings (bayesrobust.presets).")
model_option = click.option("--model", required=True, type=click.Choice(Model.values()),
                            help="baseNN (deterministic), advNN (adversarially trained) or fullBNN (Bayesian).")
inference_option = click.option("--inference", type=click.Choice(Inference.values()), default=None,
                                help="fullBNN inference: svi or hmc (NUTS). Default: the preset's.")
out_option = click.option("--out", default=DEFAULT_OUT, show_default=True, envvar=OUT_ENV, show_envvar=True,
                          type=click.Path(file_okay=False, path_type=Path),
                          help="Output folder; models/, attacks/, explanations/, analysis/, figures/ live below it.")
attack_option = click.option("--attack", "attack_name", type=click.Choice(AttackName.values()), default="fgsm",
                             show_default=True, help="FGSM (Linf) or PGD (Linf or L2).")
norm_option = click.option("--norm", type=click.Choice(Norm.values()), default="linf", show_default=True,
                           help="Attack norm (PGD; FGSM is Linf).")
mode_option = click.option("--posterior-mode", type=click.Choice(PosteriorMode.values()), default="mean_grad",
                           show_default=True, help="How the attack averages over posterior draws.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
device_option = click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
data_root_option = click.option("--data-root", type=click.Path(path_type=Path), default=None,
                                help="Folder with MNIST/, FashionMNIST/, cifar-10-batches-py/ "
                                     "(e.g. ../shared/datasets). Not needed for mnist5k.")
force_option = click.option("--force", is_flag=True,
                            help="Redo the stage even if its result exists with the same settings.")
progress_option = click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
