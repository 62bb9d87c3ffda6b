"""Redraw the ladder figure of a published report (docs/results/NAME) from its numbers.csv, for reports whose run
folder is gone: `.venv/bin/python shell/redraw_ladder_figure.py docs/results/NAME`. Writes
NAME/figures/report_files__differences.png with today's `results_report.differences_figure`."""
import sys
from pathlib import Path

import matplotlib
import pandas as pd

from bayesrobust.results_report import analysis_label, differences_figure
from bayesrobust.stages import save_figure

matplotlib.use("Agg")
if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "numbers.csv").is_file():
    sys.exit(f"usage: redraw_ladder_figure.py docs/results/NAME (a published report folder with numbers.csv); "
             f"got {sys.argv[1:]}")
folder = Path(sys.argv[1])
frame = pd.read_csv(folder / "numbers.csv")
analyses = {}
for name, rows in frame.groupby("analysis", sort=False):
    numbers = rows.set_index(["comparison", "subset", "rule", "layer"])[["diff_median", "diff_ci_low", "diff_ci_high"]]
    analyses[analysis_label(name)] = numbers.to_xarray()
save_figure(differences_figure(analyses), folder / "figures" / "report_files__differences", formats=("png",), dpi=120)
