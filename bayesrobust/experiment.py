"""One preset's experiment, stage by stage, from Python: the paper's comparison of a deterministic (baseNN),
an adversarially trained (advNN) and a Bayesian (fullBNN) network.

::

    from bayesrobust import Experiment
    exp = Experiment("quick", out="results")
    analysis = exp.run()                      # train → attack → explain → analyze → plot
    analysis.lrp_robustness_diff.median("image")

Each stage is also a method (:meth:`Experiment.train`, :meth:`~Experiment.attack`, ...) that returns what it
wrote and skips what is up to date (``force=True`` redoes it), so a notebook can run, inspect and resume
them one at a time. The ``pipeline`` command and the shell drivers call :meth:`Experiment.run`. The stages
themselves are :mod:`bayesrobust.stages`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import xarray as xr

from . import checks, paths, stages
from .choices import (
    AttackLoss,
    AttackName,
    Control,
    HMCScheme,
    LikelihoodScaling,
    Model,
    Norm,
    Optimizer,
    PosteriorMode,
    Preconditioner,
)
from .explain.rules import RULES
from .inference import resolve_inference
from .presets import Preset, get_preset, override_training
from .stability import model_name

log = logging.getLogger(__name__)

#: The LRP rules of the paper, in its order.
PAPER_RULES = ("epsilon", "gamma", "alpha1beta0")


@dataclass
class Experiment:
    """The settings of one experiment; every stage method uses them.

    Parameters
    ----------
    preset
        A preset name (:data:`bayesrobust.presets.PRESETS`) or a :class:`~bayesrobust.presets.Preset`.
    out
        Output folder (default ``$BAYESROBUST_OUT`` or ``./results``).
    inference
        fullBNN inference, ``svi`` or ``hmc`` (default: the preset's).
    attack, norm, epsilon, steps, mode, loss
        The attack of every model (default FGSM, Linf, the preset's ε and steps, ``mean_grad``, and the
        cross-entropy ``ce``; ``margin`` attacks the logit margin, docs/method.md §4.4).
    draws
        The fullBNN's numbers of posterior draws S, each attacked and explained (default: the preset's).
    n_inputs
        Test images (default: the preset's).
    rules, topk
        LRP rules explained, and k of the top-k% of the analysis.
    likelihood_scaling
        fullBNN SVI: ``full`` (N/B-scaled minibatch likelihood, default) or ``reference`` (the paper code's).
    hmc_scheme, subset_size, chains, warmup, samples, n_train
        fullBNN NUTS: ``full`` (every chain on the whole training set, default) or ``subsets`` (the paper
        code's: chain c on its own block of ``subset_size`` images); the number of chains, warmup and kept
        iterations per chain, and the cap on the ``full`` scheme's training images (default: the preset's).
        ``chains`` and ``samples`` also set an SGHMC/SGLD fullBNN's.
    epochs, lr, burnin, precondition, max_precondition, temperature, optimizer, momentum
        fullBNN training (default: the preset's): the epochs and learning rate of SVI or SGHMC/SGLD (of the
        baseNNs for an ensemble or Laplace fullBNN; not used by NUTS), and the SGHMC/SGLD burn-in epochs per
        chain, preconditioner (``none`` or ``adapted``), its cap and the posterior temperature (1: Bayes;
        docs/method.md §13.1); the optimiser (``adam`` or ``sgd``) and SGD momentum of an ensemble's or
        Laplace's baseNNs.
    report
        Called with each stage's one-line summaries, its wall time appended (default: the ``logging`` INFO
        level).
    controls
        Controls run after the explanations (docs/method.md §9.8): ``cross`` (each model explained on the
        adversarial images of the model it is compared with) and/or ``random`` (on a random-sign perturbation
        of its own attack's L2 norm). Default none.
    prior_scale, members
        fullBNN training overrides: the prior's standard deviation; the number of ensemble members.

    Attributes
    ----------
    stage_seconds
        ``(result path, wall seconds, skipped)`` of every stage run so far, in order (what
        ``experiments/benchmarks/bench_study.py`` reads).
    """

    preset: str | Preset = paths.DEFAULT_PRESET
    out: str | Path | None = None
    inference: str | None = None
    attack: str = "fgsm"
    norm: str = "linf"
    epsilon: float | None = None
    steps: int | None = None
    mode: str = "mean_grad"
    loss: str = "ce"
    draws: Sequence[int] = ()
    n_inputs: int | None = None
    rules: Sequence[str] = PAPER_RULES
    topk: float = 20
    likelihood_scaling: str | None = None
    hmc_scheme: str | None = None
    subset_size: int | None = None
    chains: int | None = None
    warmup: int | None = None
    samples: int | None = None
    n_train: int | None = None
    epochs: int | None = None
    lr: float | None = None
    burnin: int | None = None
    precondition: str | None = None
    max_precondition: float | None = None
    temperature: float | None = None
    optimizer: str | None = None
    momentum: float | None = None
    seed: int = 0
    data_root: str | Path | None = None
    device: str = "cpu"
    force: bool = False
    progress: bool = False
    report: Callable[[str], object] | None = None
    models: Sequence[str] = field(default=(Model.BASE.value, Model.ADV.value, Model.BAYES.value))
    controls: Sequence[str] = ()
    prior_scale: float | None = None
    members: int | None = None
    stage_seconds: list[tuple[Path, float, bool]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        """Check every setting of every stage before any work (a bad value is a ``ValueError`` naming it)."""
        self.preset = self.preset if isinstance(self.preset, Preset) else get_preset(self.preset)
        paths.safe_name(self.preset.name, "preset name")
        self.out = paths.resolve_out(self.out)
        self.inference = resolve_inference(self.preset, Model.BAYES, self.inference)
        self.attack = AttackName.parse(self.attack, "attack").value
        self.norm = Norm.parse(self.norm, "norm").value
        self.mode = PosteriorMode.parse(self.mode, "posterior mode").value
        self.loss = AttackLoss.parse(self.loss, "attack loss").value
        if self.likelihood_scaling is not None:
            self.likelihood_scaling = LikelihoodScaling.parse(self.likelihood_scaling, "likelihood scaling").value
        if self.hmc_scheme is not None:
            self.hmc_scheme = HMCScheme.parse(self.hmc_scheme, "HMC scheme").value
        self.subset_size = checks.count("subset_size", self.subset_size)
        self.chains = checks.count("chains", self.chains)
        self.warmup = checks.count("warmup", self.warmup, minimum=0)
        self.samples = checks.count("samples", self.samples)
        self.n_train = checks.count("n_train", self.n_train)
        self.epochs = checks.count("epochs", self.epochs, minimum=0)
        self.burnin = checks.count("burnin", self.burnin, minimum=0)
        if self.precondition is not None:
            self.precondition = Preconditioner.parse(self.precondition, "preconditioner").value
        self.lr = checks.positive("lr", self.lr)
        self.max_precondition = checks.real("max_precondition", self.max_precondition, low=1)
        self.temperature = checks.positive("temperature", self.temperature)
        if self.optimizer is not None:
            self.optimizer = Optimizer.parse(self.optimizer, "optimizer").value
        self.momentum = checks.real("momentum", self.momentum, low=0, high=1, high_open=True)
        self.models = tuple(Model.parse(m, "model").value for m in self.models)
        self.controls = tuple(dict.fromkeys(Control.parse(c, "control").value for c in self.controls))
        if Model.BASE not in self.models:
            raise ValueError(f"the analysis compares against baseNN; models {list(self.models)} lack it")
        given = tuple(checks.count("draws", s, allow_none=False) for s in self.draws)
        p = self.preset
        sg = (self.chains or p.sgmcmc.chains, self.samples or p.sgmcmc.samples)
        grids = {"hmc": (self.chains or p.hmc.chains, self.samples or p.hmc.samples), "sghmc": sg, "sgld": sg,
                 "ensemble": (self.members or p.ensemble.members, 1)}
        available = grids[self.inference][0] * grids[self.inference][1] if self.inference in grids else None
        # the preset's S by default, capped at the draws a sampled posterior has (as train and attack do)
        self.draws = given or (min(p.eval_draws, available or p.eval_draws),)
        if Model.BAYES in self.models and self.inference in grids:  # chains x samples draws exist, no more
            chains, samples = grids[self.inference]
            if max(self.draws) > chains * samples:
                label = {"hmc": "HMC", "sghmc": "SGHMC", "sgld": "SGLD"}.get(self.inference, self.inference)
                raise ValueError(f"draws={max(self.draws)} but the {label} posterior of preset "
                                 f"{self.preset.name!r} has only {chains * samples} draws ({chains} chains x "
                                 f"{samples} samples)")
        self.n_inputs = checks.count("n_inputs", self.n_inputs)
        self.steps = checks.count("steps", self.steps)
        if self.epsilon is not None:
            checks.positive("epsilon", self.epsilon)  # the norm's bound: make_attack_for
        checks.seed("seed", self.seed)
        if not self.rules:
            raise ValueError(f"at least one LRP rule is needed; expected some of {', '.join(RULES)}")
        for rule in self.rules:
            if rule not in RULES:
                raise ValueError(f"unknown LRP rule {rule!r}; expected one of {', '.join(RULES)}")
        self.topk = stages.check_topk(self.topk)
        made = stages.make_attack_for(self.preset, self.attack, self.norm, self.epsilon, self.steps, None, True,
                                      self.loss)
        from .adversarial.posterior import check_mode
        check_mode(self.mode, made.loss)
        stages.resolve_device(self.device)
        for model in self.models:  # every training setting, with the overrides train() applies
            override_training(self.preset, model, self._inference(model), **self._overrides(model))  # checks all
        self._check_data()
        paths.prepare_out(self.out)  # an unusable folder is reported now, not after training

    def _check_data(self) -> None:
        """The test split is there and holds enough images of every class for ``n_inputs`` (checked by
        drawing the subset the attacks will use), before anything is trained."""
        from .data import balanced_subset, load
        test = load(self.preset.dataset, "test", self.data_root)
        balanced_subset(test, self.n_inputs if self.n_inputs is not None else self.preset.n_inputs)

    # -- helpers -------------------------------------------------------------------------------------------
    def _tick(self) -> None:
        """Start the clock of the next stage (the stages run one after another; :meth:`_say` reads it)."""
        self._started = time.perf_counter()

    def _say(self, done: stages.Done) -> stages.Done:
        """Report a finished stage with its wall time (since the previous report or :meth:`_tick`)."""
        now = time.perf_counter()
        seconds = now - getattr(self, "_started", now)
        self._started = now
        self.stage_seconds.append((Path(done.path), seconds, bool(done.skipped)))
        (self.report or log.info)(f"{done.summary} [{seconds:.1f} s]")
        return done

    def _overrides(self, model: str) -> dict[str, object]:
        """The training overrides of ``model`` (the fullBNN's reference-fidelity switches)."""
        if model != Model.BAYES:
            return {}
        return {"likelihood_scaling": self.likelihood_scaling, "hmc_scheme": self.hmc_scheme,
                "subset_size": self.subset_size, "chains": self.chains, "warmup": self.warmup,
                "samples": self.samples, "n_train": self.n_train, "prior_scale": self.prior_scale,
                "members": self.members, "epochs": self.epochs, "lr": self.lr, "burnin": self.burnin,
                "precondition": self.precondition, "max_precondition": self.max_precondition,
                "temperature": self.temperature, "optimizer": self.optimizer, "momentum": self.momentum}

    def _inference(self, model: str) -> str | None:
        return self.inference if model == Model.BAYES else None

    @property
    def analysis_name(self) -> str:
        """The file stem of this experiment's analysis under ``OUT/analysis``."""
        return f"{self.preset.name}_{self.attack}{paths.loss_part(self.loss)}_top{self.topk:g}"

    def runs(self) -> list[tuple[str, int]]:
        """``(model, S)`` of every attack run: one per deterministic model, one per S for the fullBNN."""
        return [(m, s) for m in self.models for s in (self.draws if m == Model.BAYES else (1,))]

    # -- stages --------------------------------------------------------------------------------------------
    def train(self) -> dict[str, Path]:
        """Train every model; returns model → checkpoint folder."""
        self._tick()
        found = {}
        for model in self.models:
            done = self._say(stages.train(self.preset, model, inference=self._inference(model), out=self.out,
                                          overrides=self._overrides(model), seed=self.seed, device=self.device,
                                          data_root=self.data_root, progress=self.progress, force=self.force))
            found[model] = done.path
        return found

    def attack_runs(self) -> list[Path]:
        """Attack every model (the fullBNN once per S); returns the attack files in :meth:`runs` order."""
        self._tick()
        return [self._say(stages.attack(self.preset, model, inference=self._inference(model), out=self.out,
                                        attack=self.attack, norm=self.norm, epsilon=self.epsilon,
                                        steps=self.steps, n_inputs=self.n_inputs, n_draws=s, mode=self.mode,
                                        loss=self.loss, seed=self.seed, data_root=self.data_root, device=self.device,
                                        force=self.force)).path
                for model, s in self.runs()]

    def explain(self, attack_runs: Sequence[Path] | None = None) -> list[Path]:
        """Explain the clean and adversarial images of every attack run with every rule at every layer."""
        attack_runs = self.attack_runs() if attack_runs is None else attack_runs
        self._tick()
        return [self._say(stages.explain(self.preset, model, run, inference=self._inference(model),
                                         out=self.out, rules=self.rules, layers="all", n_draws=s,
                                         seed=self.seed, device=self.device, force=self.force)).path
                for (model, s), run in zip(self.runs(), attack_runs)]

    def run_controls(self, attack_runs: Sequence[Path] | None = None) -> list[Path]:
        """The controls of :attr:`controls` for every explained run (docs/method.md §9.8): ``random`` per run,
        ``cross`` per pair (model, baseNN) both ways. Returns the control files."""
        attack_runs = self.attack_runs() if attack_runs is None else attack_runs
        self._tick()
        runs = list(zip(self.runs(), attack_runs))
        det = [run for (model, _), run in runs if model == Model.BASE][0]
        jobs = []
        for (model, _), run in runs:
            if Control.RANDOM in self.controls:
                jobs.append((model, Control.RANDOM, run, None))
            if Control.CROSS in self.controls and model != Model.BASE:
                jobs += [(model, Control.CROSS, run, det), (Model.BASE.value, Control.CROSS, det, run)]
        return [self._say(stages.control(self.preset, model, kind, run, other_run=other,
                                         inference=self._inference(model), out=self.out, seed=self.seed,
                                         device=self.device, force=self.force)).path
                for model, kind, run, other in jobs]

    def analyze(self) -> xr.Dataset:
        """The stability analysis of the explained runs (written to ``OUT/analysis``); returns the Dataset."""
        self._tick()
        done = stages.analyze(self.out, self.preset.name, topk=self.topk, attack=self.attack, norm=self.norm,
                              epsilon=self.epsilon if self.epsilon is not None else self.preset.attack_epsilon,
                              mode=self.mode, method="lrp", name=self.analysis_name, loss=self.loss,
                              models=[model_name(m, s) for m, s in self.runs()])
        self._say(done)
        return done.details["dataset"]

    def plot(self) -> list[Path]:
        """Draw the figures of this experiment's analysis; returns the files written."""
        self._tick()
        done = stages.plot(self.out, analyses=[self.analysis_name], preset=self.preset.name)
        self._say(done)
        return done.details["written"]

    def run(self) -> xr.Dataset:
        """Every stage in order; returns the analysis Dataset."""
        self.train()
        attack_runs = self.attack_runs()
        self.explain(attack_runs)
        if self.controls:
            self.run_controls(attack_runs)
        analysis = self.analyze()
        self.plot()
        return analysis


def headline(ds: xr.Dataset) -> str:
    """The headline numbers of an analysis: per rule, the median paired Bay−Det and Adv−Det LRP robustness at
    the last layer with its paired bootstrap 95% CI, and Spearman ρ(LRP robustness, softmax robustness) per
    model there."""
    from .stages import format_ci
    last = ds.layer.values[-1]
    at = {"layer": last, "subset": "all"}
    lines = [f"Headline (last layer, top {ds.attrs.get('topk', '?')}%, {ds.sizes['image']} images): "
             f"median paired LRP robustness difference [paired bootstrap 95% CI]"]
    for comparison in ds.comparison.values:
        values = ", ".join(
            f"{rule} " + format_ci(*(float(ds[v].sel(at).sel(comparison=comparison, rule=rule))
                                     for v in ("diff_median", "diff_ci_low", "diff_ci_high")))
            for rule in ds.rule.values)
        lines.append(f"  {comparison:>22}: {values}")
    rho = ds.spearman_rho.sel(layer=last, subset="all")
    lines.append("Spearman rho(LRP robustness, softmax robustness), last layer")
    for model in ds.model.values:
        values = ", ".join(f"{rule} {float(rho.sel(model=model, rule=rule)):+.2f}" for rule in ds.rule.values)
        lines.append(f"  {model:>22}: {values}")
    return "\n".join(lines)
