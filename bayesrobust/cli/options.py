"""Shared pieces of the command-line entry points (``python -m bayesrobust.train`` and its siblings).

The library never parses arguments, prints or exits; each entry point parses with click, builds a config,
makes one library call and writes. This module holds what they share: the common options, the translation
of library errors into a one-line message and a non-zero exit, and logging/progress set-up.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable

import click

from ..data import DataNotFoundError
from ..presets import INFERENCES, MODELS, PRESETS

USER_ERRORS = (ValueError, FileNotFoundError, DataNotFoundError, KeyError, IndexError)


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


def resolve_device(device: str) -> str:
    """``'cpu'``, ``'cuda'`` or ``'cuda:N'``; a CUDA request on a machine without CUDA is an error."""
    import torch
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device} requested but CUDA is not available on this machine; "
                             f"use --device cpu")
        return device
    raise ValueError(f"unknown device {device!r}; expected cpu, cuda or cuda:N")


preset_option = click.option("--preset", required=True, type=click.Choice(list(PRESETS)),
                              help="Named experiment settings (bayesrobust.presets).")
model_option = click.option("--model", required=True, type=click.Choice(list(MODELS)),
                            help="baseNN (deterministic), advNN (adversarially trained) or fullBNN (Bayesian).")
inference_option = click.option("--inference", type=click.Choice(list(INFERENCES)), default=None,
                                help="fullBNN inference: svi or hmc (NUTS). Default: the preset's.")
out_option = click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
                          help="Output folder; models/, attacks/, explanations/, ... live below it.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
device_option = click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
data_root_option = click.option("--data-root", type=click.Path(path_type=Path), default=None,
                                help="Folder with MNIST/, FashionMNIST/, cifar-10-batches-py/ "
                                     "(e.g. ../shared/datasets). Not needed for mnist5k.")
force_option = click.option("--force", is_flag=True,
                            help="Redo the stage even if its result exists with the same settings.")


def up_to_date(stored: dict | None, wanted: dict, force: bool) -> bool:
    """Whether a stage can be skipped: its stored settings equal ``wanted`` on every key of ``wanted``
    (JSON-normalised, so tuples and lists compare equal) and ``--force`` was not given."""
    import json
    if force or stored is None:
        return False
    normal = lambda v: json.loads(json.dumps(v, sort_keys=True, default=str))  # noqa: E731
    return all(normal(stored.get(k)) == normal(v) for k, v in wanted.items())


verbose_option = click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
