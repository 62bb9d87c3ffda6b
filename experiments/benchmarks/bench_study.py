"""Stage times of one paper-scale experiment against the reference code's per-unit costs (issue 14): prints
its figures, it is not a test.

Runs :class:`bayesrobust.Experiment` (train ×3, attack every model, explain the clean and adversarial images
with every rule at every layer, analyse, plot) and times every stage (``Experiment.stage_seconds``). Each
stage is compared with the reference code's cost of the same work, from its per-unit costs measured on this
machine with one thread (the issue's figures):

* LRP: 15 ms per image · draw · layer (one rule);
* Bayesian FGSM: 16 ms per image · draw and attack step (15–17 ms; PGD-k costs k steps);
* one SVI epoch of the conv-512 net on 60,000 images: 7.5 min (scaled by the preset's training-set size and
  epochs; other trainings have no reference figure and are shown without a ratio).

From the per-unit costs measured here it then projects the issue's full experiment: train ×3, FGSM and
PGD-40, explanations of 3 rules × 3 layers × S ∈ {10, 50, 100} × 500 images × {clean, adversarial} (the
attacks also for every S, since the adversarial images explained with S draws come from the S-draw attack; a
PGD step costs what the FGSM step measured here costs). Stages found up to date are skipped by the library and
reported as such (use a fresh ``--out`` to time everything). The machine's float32 matmul throughput is printed
beside, measured in the same run.

With ``--attack fgsm --attack pgd --draws 10 --draws 50 --draws 100`` (in a fresh ``--out``) it runs the issue's
whole experiment and prints its measured wall time beside the reference's cost of the same stages.

Run alone on the machine, from the repository root::

    .venv/bin/python experiments/benchmarks/bench_study.py --out /tmp/study --data-root ../shared/datasets \
        --attack fgsm --attack pgd --draws 10 --draws 50 --draws 100
    .venv/bin/python experiments/benchmarks/bench_study.py --small      # tiny preset: checks that it runs
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from bayesrobust import Experiment  # noqa: E402
from bayesrobust.models.architectures import build  # noqa: E402
from bayesrobust.presets import get_preset  # noqa: E402

LRP_MS = 15.0          # reference: per image · draw · layer
ATTACK_MS = 16.0       # reference: per image · draw · step
SVI_EPOCH_MIN = 7.5    # reference: conv-512, 60,000 images


def matmul_gflops(n: int = 2048, repeat: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n ** 3 * repeat / (time.perf_counter() - start) / 1e9


def draws_of(path: Path) -> int:
    found = re.search(r"_S(\d+)", path.name)
    return int(found.group(1)) if found else 1


def describe(path: Path, exp: Experiment, n_layers: int) -> tuple[str, str, float | None, dict]:
    """(stage, work, reference seconds or None, units) of one stage result."""
    parts = path.parts
    p = exp.preset
    n = exp.n_inputs or p.n_inputs
    steps = 1 if exp.attack == "fgsm" else (exp.steps or p.attack_steps)
    if "models" in parts:
        model = path.name
        if model.startswith("fullBNN") and exp.inference == "svi" and (p.arch.name, p.arch.hidden) == ("conv", 512) \
                and p.dataset in ("mnist", "fashion_mnist"):
            return f"train {model}", f"SVI {p.svi.epochs} epochs", SVI_EPOCH_MIN * 60 * p.svi.epochs, {}
        return f"train {model}", "", None, {}
    s = draws_of(path)
    if "attacks" in parts:
        units = n * s * steps
        return f"attack {path.stem}", f"{n} images x {s} draws x {steps} steps", units * ATTACK_MS / 1e3, \
            {"attack": units}
    if "explanations" in parts:
        units = n * 2 * s * n_layers * len(exp.rules)
        return f"explain {path.name}", f"{n} x 2 images x {s} draws x {n_layers} layers x {len(exp.rules)} rules", \
            units * LRP_MS / 1e3, {"explain": units}
    return ("analyze" if "analysis" in parts else "plot"), "", None, {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist_conv")
    parser.add_argument("--out", default="results/bench_study")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--n-inputs", type=int, default=500)
    parser.add_argument("--draws", type=int, action="append", help="fullBNN S (repeat; default 100)")
    parser.add_argument("--attack", action="append", choices=["fgsm", "pgd"],
                        help="attack (repeat: each runs after the other in --out; default fgsm)")
    parser.add_argument("--steps", type=int, default=None, help="PGD steps (default: the preset's)")
    parser.add_argument("--small", action="store_true", help="tiny preset, 20 images, S = 5: checks that it runs")
    args = parser.parse_args()
    if args.small:
        args.preset, args.n_inputs, args.draws = "tiny", 20, [5]
    draws, attacks = args.draws or [100], list(dict.fromkeys(args.attack or ["fgsm"]))
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    peak_before = matmul_gflops()
    experiments = [Experiment(args.preset, out=args.out, data_root=args.data_root, n_inputs=args.n_inputs,
                              draws=draws, attack=attack, steps=args.steps, report=print) for attack in attacks]
    walls = []
    for exp in experiments:  # one after another: the second finds the models trained by the first
        start = time.perf_counter()
        exp.run()
        walls.append(time.perf_counter() - start)
    peak = (peak_before + matmul_gflops()) / 2
    exp = experiments[0]
    n_layers = len(build(exp.preset.arch).layers)

    print(f"\nstage times, preset {exp.preset.name} ({args.n_inputs} images, S = {draws}, {' then '.join(attacks)}); "
          f"float32 matmul {peak:.0f} GFLOP/s")
    print(f"{'stage':58s} {'ours s':>9s} {'reference s':>12s} {'ratio':>7s}  work")
    ours_sum = ref_sum = 0.0
    per_unit: dict[str, list[float]] = {"attack": [0.0, 0.0], "explain": [0.0, 0.0]}
    trained = skipped_training = False
    for e in experiments:
        for path, seconds, skipped in e.stage_seconds:
            stage, work, ref, units = describe(path, e, n_layers)
            if skipped:
                print(f"{stage[:58]:58s} {'skipped':>9s}")
                skipped_training |= "models" in path.parts and e is experiments[0]
                continue
            trained |= "models" in path.parts
            for kind, count in units.items():
                if "fullBNN" in path.name:
                    per_unit[kind][0] += seconds
                    per_unit[kind][1] += count
            ratio = f"{ref / seconds:6.1f}x" if ref else ""
            print(f"{stage[:58]:58s} {seconds:9.1f} {ref if ref else float('nan'):12.1f} {ratio:>7s}  {work}")
            if ref:
                ours_sum += seconds
                ref_sum += ref
    print(f"{'all stages (wall)':58s} {sum(walls):9.1f}")
    if ours_sum:
        print(f"the stages with a reference figure: ours {ours_sum:.0f} s, reference {ref_sum:.0f} s "
              f"({ref_sum / ours_sum:.1f}x)")
    p = get_preset(args.preset)
    study = (sorted(set(draws)) == [10, 50, 100] and set(attacks) == {"fgsm", "pgd"} and args.n_inputs == 500
             and (args.steps or p.attack_steps) == 40 and not skipped_training)
    if study:  # every stage of the experiment ran here: measured, not projected
        print(f"\nmeasured full experiment (train x3, FGSM and PGD-40 at S in 10/50/100 with their explanations): "
              f"ours {sum(walls) / 60:.0f} min (all stages, wall), reference {ref_sum / 3600:.1f} h for the stages "
              f"with a reference figure: {ref_sum / sum(walls):.1f}x (goal >= 20x, under 90 min)")

    if all(count for _, count in per_unit.values()):
        attack_s = per_unit["attack"][0] / per_unit["attack"][1]
        explain_s = per_unit["explain"][0] / per_unit["explain"][1]
        n, rules, draws_study = 500, 3, (10, 50, 100)
        # FGSM + PGD-40 for every S: the adversarial images explained with S draws are those of the S-draw attack
        attack_units = n * sum(draws_study) * (1 + 40)
        explain_units = 2 * (n * 2 * sum(draws_study) * n_layers * rules)    # both attacks, clean + adversarial
        train_s = sum(seconds for e in experiments for path, seconds, skipped in e.stage_seconds
                      if "models" in path.parts and not skipped)
        ours = train_s + attack_units * attack_s + explain_units * explain_s
        ref_train = SVI_EPOCH_MIN * 60 * p.svi.epochs * (p.arch.hidden == 512)
        ref = ref_train + attack_units * ATTACK_MS / 1e3 + explain_units * LRP_MS / 1e3
        print(f"\nper unit, fullBNN: attack {1e3 * attack_s:.3f} ms per image·draw·step (reference {ATTACK_MS}), "
              f"LRP {1e3 * explain_s:.3f} ms per image·draw·layer·rule (reference {LRP_MS})")
        untimed = "" if trained else " (training was found up to date: not timed, left out)"
        print(f"projected full experiment (train x3 as measured{untimed}, FGSM + PGD-40 at S in 10/50/100, "
              f"explanations S in 10/50/100 x 500 x 2 x {n_layers} layers x 3 rules for both attacks): ours "
              f"{ours / 60:.0f} min, reference {ref / 3600:.1f} h (only SVI training counted for its training): "
              f"{ref / ours:.1f}x (goal >= 20x, under 90 min)")


if __name__ == "__main__":
    main()
