"""Redraw the ladder figure of a published report (docs/results/NAME) from its numbers.csv, for reports whose run
folder is gone: `.venv/bin/python shell/redraw_ladder_figure.py docs/results/NAME`. Writes
NAME/figures/report_files__differences.png with today's `results_report.differences_figure`, compacted like the
report's own figures (`results_report.compact_png`)."""
import sys
import tempfile
from pathlib import Path

import matplotlib
import pandas as pd

from bayesrobust.results_report import analysis_label, compact_png, differences_figure
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
with tempfile.TemporaryDirectory() as tmp:
    (drawn,) = save_figure(differences_figure(analyses), Path(tmp) / "differences", formats=("png",), dpi=120)
    compact_png(drawn, folder / "figures" / "report_files__differences.png")
