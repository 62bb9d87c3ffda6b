"""What the commands share: their common options (defined once, with the same defaults everywhere), the
one rule for errors (:mod:`bayesrobust.errors`, applied by :func:`friendly_errors`) and logging set-up.

Every command parses its options, makes one call to :mod:`bayesrobust.stages` (or
:class:`bayesrobust.Experiment`) and prints the summary it returns.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import click

from ..choices import AttackLoss, AttackName, Inference, Model, Norm, PosteriorMode
from ..errors import BUG_EXIT_CODE, BUG_NOTE, INTERRUPT_EXIT_CODE, USER_ERRORS, one_line, user_message
from ..paths import DEFAULT_OUT, DEFAULT_PRESET, OUT_ENV
from ..presets import PRESETS

CONTEXT = {"help_option_names": ["-h", "--help"]}


class BugError(click.ClickException):
    """An exception that is not a user error reached a command: a bug in bayesrobust. Shown as its type and
    message and a request to report it (with ``verbose``, the whole traceback before that); exit status
    :data:`~bayesrobust.errors.BUG_EXIT_CODE`. The original exception is its ``__cause__``."""

    exit_code = BUG_EXIT_CODE

    def __init__(self, err: BaseException, verbose: bool = False):
        text = one_line(str(err))
        super().__init__(f"{type(err).__name__}: {text}" if text else type(err).__name__)
        self.error = err
        self.verbose = verbose

    def show(self, file: IO[Any] | None = None) -> None:
        file = file or click.get_text_stream("stderr")
        if self.verbose:
            click.echo("".join(traceback.format_exception(self.error)).rstrip("\n"), file=file)
            click.echo(f"{BUG_NOTE}.", file=file)
        else:
            click.echo(self.message, file=file)
            click.echo(f"{BUG_NOTE} (run the command again with -v for the full traceback).", file=file)


class Interrupted(click.ClickException):
    """Ctrl-C: ends with ``Aborted.`` on one line (after a line break closing the terminal's ``^C``), exit
    status :data:`~bayesrobust.errors.INTERRUPT_EXIT_CODE`, no traceback."""

    exit_code = INTERRUPT_EXIT_CODE

    def __init__(self) -> None:
        super().__init__("Aborted.")

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo("\nAborted.", file=file or click.get_text_stream("stderr"))


def friendly_errors(func: Callable) -> Callable:
    """Apply the one rule for errors (:mod:`bayesrobust.errors`) to a command's function.

    A user error becomes ``Error: <message>`` on one line, exit status 1; Ctrl-C becomes ``Aborted.``; any
    other exception is a bug (:class:`BugError`: type, message and a request to report it; the traceback with
    the command's ``-v``/``--verbose``). click's own exceptions (usage errors, exits) pass unchanged.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise  # click shows its own; a closed pipe (``| head``) ends quietly
        except USER_ERRORS as err:
            raise click.ClickException(user_message(err)) from err
        except KeyboardInterrupt as err:
            raise Interrupted() from err
        except Exception as err:
            raise BugError(err, verbose=bool(kwargs.get("verbose"))) from err
    return wrapper


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pyro").setLevel(logging.WARNING)


class Command(click.Command):
    """A click command whose usage errors are one line too: click quotes most values, but not the stray
    arguments of ``Got unexpected extra argument (...)``, so a value with a line break broke the line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:
            err.message = one_line(err.message)
            raise


class Choice(click.Choice):
    """click's Choice, but a missing required value is reported on one line (``Error: Missing option
    '--model'. Choose from: baseNN, advNN, fullBNN.``): click lists the choices one per line."""

    def get_missing_message(self, param: click.Parameter, ctx: click.Context | None) -> str:
        return f"Choose from: {', '.join(map(str, self.choices))}."


preset_option = click.option("--preset", default=DEFAULT_PRESET, show_default=True, type=click.Choice(list(PRESETS)),
                             help="Named experiment settings (bayesrobust.presets).")
model_option = click.option("--model", required=True, type=Choice(Model.values()),
                            help="baseNN (deterministic), advNN (adversarially trained), fullBNN (Bayesian), "
                                 "artNN / artBNN (attributional robustness training: deterministic / SVI).")
inference_option = click.option("--inference", type=click.Choice(Inference.values()), default=None,
                                help="fullBNN inference: svi, hmc (NUTS), sghmc, sgld, laplace (around "
                                     "the baseNN) or ensemble. Default: the preset's.")
out_option = click.option("--out", default=DEFAULT_OUT, show_default=True, envvar=OUT_ENV, show_envvar=True,
                          type=click.Path(file_okay=False, path_type=Path),
                          help="Output folder; models/, attacks/, explanations/, analysis/, figures/ live below it.")
attack_option = click.option("--attack", "attack_name", type=click.Choice(AttackName.values()), default="fgsm",
                             show_default=True, help="FGSM (Linf) or PGD (Linf or L2).")
norm_option = click.option("--norm", type=click.Choice(Norm.values()), default="linf", show_default=True,
                           help="Attack norm (PGD; FGSM is Linf).")
mode_option = click.option("--posterior-mode", type=click.Choice(PosteriorMode.values()), default="mean_grad",
                           show_default=True, help="How the attack averages over posterior draws.")
loss_option = click.option("--loss", type=click.Choice(AttackLoss.values()), default="ce", show_default=True,
                           help="What FGSM/PGD increases: the cross-entropy (ce, the paper's) or the logit margin "
                                "(margin), which a saturated softmax does not mask.")
#: Seeds go to torch, numpy and ``random``; numpy takes 0 to 2**32 - 1.
SEED_RANGE = click.IntRange(0, 2**32 - 1)
seed_option = click.option("--seed", type=SEED_RANGE, default=0, show_default=True, help="Random seed.")
device_option = click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
data_root_option = click.option("--data-root", type=click.Path(path_type=Path), default=None,
                                help="Folder with MNIST/, FashionMNIST/, cifar-10-batches-py/ "
                                     "(e.g. ../shared/datasets). Not needed for mnist5k.")
force_option = click.option("--force", is_flag=True,
                            help="Redo the stage even if its result exists with the same settings.")
progress_option = click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bars.")
verbose_option = click.option("-v", "--verbose", is_flag=True,
                              help="Debug logging, and the full traceback should bayesrobust fail with a bug.")
