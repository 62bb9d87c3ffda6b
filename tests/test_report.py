"""``bayesrobust report``: one self-contained HTML page and a Markdown file from every result under OUT."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
from click.testing import CliRunner
from test_analysis import _run

from bayesrobust import stability
from bayesrobust.cli import main
from bayesrobust.models.architectures import ArchConfig, build
from bayesrobust.models.posterior import deterministic
from bayesrobust.results_report import REPORT_FILES, find_analyses, short_labels, write_report
from bayesrobust.stages import format_ci, save_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects every tag and every image source; fails on unbalanced tables."""

    def __init__(self):
        super().__init__()
        self.images, self.open_tables, self.tables = [], 0, 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "table":
            self.open_tables += 1
            self.tables += 1

    def handle_endtag(self, tag):
        if tag == "table":
            self.open_tables -= 1


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, dict]:
    """Two ladder steps, each a results folder with one analysis, and a figure in one of them."""
    root = tmp_path_factory.mktemp("study")
    analyses = {}
    runs = [_run("baseNN", 1), _run("advNN", 1), _run("fullBNN", 10), _run("fullBNN", 50)]
    for step, topk in (("1_reference", 20), ("2_correct", 40)):
        ds = stability.analyse(runs, topk=topk)
        stability.write(ds, root / step, name=f"quick_fgsm_top{topk}")
        analyses[step] = ds
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, root / "1_reference" / "figures" / "quick" / "fig4", formats=("png",))
    plt.close(fig)
    deterministic(build(ArchConfig("fc2", 8))).save(root / "1_reference" / "models" / "quick" / "baseNN")
    return root, analyses


def test_report_is_self_contained_and_shows_every_interval(study):
    root, analyses = study
    html_path, md_path = write_report(root, title="ladder")
    page = _Page()
    page.feed(html_path.read_text())
    assert page.open_tables == 0 and page.tables >= 6  # 3 tables per analysis, balanced
    assert len(page.images) == 4  # the differences figure, Bay - Det against S per analysis, and fig4
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    text = html_path.read_text()
    for ds in analyses.values():
        at = ds.sel(subset="all", comparison="fullBNN_S10-baseNN", rule="gamma", layer=0)
        cell = format_ci(float(at.diff_median), float(at.diff_ci_low), float(at.diff_ci_high))
        assert cell in text and cell in md_path.read_text()
    md = md_path.read_text()
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(referenced) == sorted([f"{REPORT_FILES}/differences.png", "1_reference/figures/quick/fig4.png",
                                         f"{REPORT_FILES}/draws_1_reference__quick_fgsm_top20.png",
                                         f"{REPORT_FILES}/draws_2_correct__quick_fgsm_top40.png"])
    assert all((root / ref).is_file() for ref in referenced)
    for step in analyses:  # the provenance of every result, with its git revision
        assert f"{step}/analysis/" in md and f"{step}/analysis/" in text
    assert analyses["1_reference"].attrs["git_revision"] in text
    # a model's row carries its own creation time, git revision and versions (config.json's provenance)
    stamp = json.loads((root / "1_reference" / "models" / "quick" / "baseNN" / "config.json").read_text())["provenance"]
    row = next(line for line in md.splitlines() if line.startswith("| 1_reference/models/quick/baseNN |"))
    assert row == f"| 1_reference/models/quick/baseNN | model (deterministic) | {stamp['created']} | " \
                  f"{stamp['git_revision']} |"
    assert "torch" in json.loads(stamp["versions"])


def test_report_follows_linked_step_folders_once_and_ends_a_link_cycle(study, tmp_path):
    """A folder of links to the step folders of several runs is reported as one study: every analysis and
    figure behind a link; a real folder reached twice is reported once (at its first path in sorted order),
    a link cycle ends and a dangling link is skipped."""
    root, analyses = study
    combined = tmp_path / "combined"
    combined.mkdir()
    (combined / "a_reference").symlink_to(root / "1_reference", target_is_directory=True)
    (combined / "b_correct").symlink_to(root / "2_correct", target_is_directory=True)
    (combined / "b_again").symlink_to(root / "2_correct", target_is_directory=True)
    (combined / "loop").symlink_to(combined, target_is_directory=True)
    (combined / "gone").symlink_to(tmp_path / "missing")
    assert find_analyses(combined) == [combined / "a_reference" / "analysis" / "quick_fgsm_top20.nc",
                                       combined / "b_again" / "analysis" / "quick_fgsm_top40.nc"]
    _, md_path = write_report(combined, title="combined")
    md = md_path.read_text()
    assert "Analysis a_reference/quick_fgsm_top20" in md and "Analysis b_again/quick_fgsm_top40" in md
    assert "a_reference/figures/quick/fig4.png" in md
    assert "a_reference/models/quick/baseNN" in md  # the provenance behind a link too
    assert "b_correct" not in md and "loop" not in md and "gone" not in md
    at = analyses["2_correct"].sel(subset="all", comparison="fullBNN_S10-baseNN", rule="gamma", layer=0)
    assert format_ci(float(at.diff_median), float(at.diff_ci_low), float(at.diff_ci_high)) in md
    assert (combined / REPORT_FILES / "differences.png").is_file()


def test_report_command_and_its_errors(study, tmp_path):
    root, _ = study
    result = CliRunner().invoke(main, ["report", "--out", str(root)])
    assert result.exit_code == 0, result.output
    assert "report.html" in result.output
    empty = CliRunner().invoke(main, ["report", "--out", str(tmp_path)])
    assert empty.exit_code == 1 and "no analysis under" in empty.output
    assert not (tmp_path / "report.html").exists()


def test_published_report_is_markdown_figures_and_the_numbers(study, tmp_path):
    """--to writes report.md, its figures (copied, every reference resolves) and numbers.csv whose rows are
    the Datasets' median differences and CIs; the command is stated on top; nothing but text and PNG."""
    import pandas as pd
    root, analyses = study
    to = tmp_path / "docs" / "results"
    result = CliRunner().invoke(main, ["report", "--out", str(root), "--to", str(to),
                                       "--command", "bash shell/exec_fidelity_ladder.sh"])
    assert result.exit_code == 0, result.output
    md = (to / "report.md").read_text()
    assert "Produced by `bash shell/exec_fidelity_ladder.sh`" in md
    assert analyses["1_reference"].attrs["git_revision"] in md
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(referenced) == 4 and all((to / ref).read_bytes().startswith(PNG_MAGIC) for ref in referenced)
    assert {p.suffix for p in to.rglob("*") if p.is_file()} == {".md", ".png", ".csv"}
    table = pd.read_csv(to / "numbers.csv")
    assert len(table) == sum(ds.sizes["comparison"] * ds.sizes["subset"] * ds.sizes["rule"] * ds.sizes["layer"]
                             for ds in analyses.values())
    for step, ds in analyses.items():
        at = ds.sel(subset="all", comparison="fullBNN_S10-baseNN", rule="gamma", layer=0)
        row = table[(table.analysis == f"{step}/analysis/" + next(iter((root / step / "analysis").glob("*.nc"))).stem)
                    & (table.comparison == "fullBNN_S10-baseNN") & (table.subset == "all")
                    & (table.rule == "gamma") & (table.layer == 0)]
        assert len(row) == 1
        for name in ("diff_median", "diff_ci_low", "diff_ci_high"):
            assert row[name].item() == pytest.approx(float(at[name]), rel=1e-5, abs=1e-7)
    lone = CliRunner().invoke(main, ["report", "--out", str(root), "--command", "x"])
    assert lone.exit_code != 0 and "--to" in lone.output
    # shell/redraw_ladder_figure.py redraws the ladder figure from numbers.csv alone (for reports whose run is gone)
    figure = to / "figures" / "report_files__differences.png"
    figure.unlink()
    script = [sys.executable, str(Path(__file__).resolve().parents[1] / "shell" / "redraw_ladder_figure.py")]
    redrawn = subprocess.run([*script, str(to)], capture_output=True, text=True, timeout=300)
    assert redrawn.returncode == 0, redrawn.stderr
    assert figure.read_bytes().startswith(PNG_MAGIC)
    from PIL import Image
    with Image.open(figure) as redrawn_image:
        assert redrawn_image.mode == "P"  # compacted like the report's own figures (compact_png)
    wrong = subprocess.run([*script, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 1 and "numbers.csv" in wrong.stderr and str(tmp_path) in wrong.stderr


def test_ladder_figure_labels_keep_only_what_tells_the_analyses_apart():
    ladder = ["mnist_conv/0_reference/mnist_conv_fgsm_top20", "mnist_conv/0_reference/mnist_conv_pgd_top20",
              "mnist_conv/4_correct/mnist_conv_fgsm_top20"]
    assert short_labels(ladder) == ["0_reference · fgsm", "0_reference · pgd", "4_correct · fgsm"]
    steps = ["fashion/0_reference/fashion_fgsm_top20", "fashion/2_attack_mean_grad/fashion_fgsm_top20"]
    assert short_labels(steps) == ["0_reference", "2_attack_mean_grad"]
    assert short_labels(["mnist_conv/4_correct/mnist_conv_fgsm_top20"]) == ["mnist_conv_fgsm_top20"]
    # a part that is one word longer than another keeps its distinguishing word, never an empty label
    assert short_labels(["a/x_top20", "a/x_y_top20"]) == ["top20", "y_top20"]
    assert short_labels(["a/x_1", "a/x_1"]) == ["a/x_1", "a/x_1"]  # not distinct: the names as they are
    uneven = ["a/b/c", "a/c"]
    assert short_labels(uneven) == uneven


def test_compact_png_is_the_same_picture_in_fewer_bytes(tmp_path):
    """A published figure (256-colour palette, flattened on white) differs from matplotlib's PNG by a few levels
    per channel on average (a few dozen at the worst 0.1% of pixels), keeps its size in pixels and takes fewer
    bytes; a transparent figure becomes white, not black."""
    import numpy as np
    from PIL import Image

    from bayesrobust.results_report import compact_png
    rng = np.random.default_rng(0)
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    a.imshow(rng.normal(size=(28, 28)), cmap="RdBu_r")
    b.scatter(rng.normal(size=2000), rng.normal(size=2000), s=4, alpha=0.4, c=rng.uniform(size=2000))
    source = save_figure(fig, tmp_path / "fig", formats=("png",), dpi=150)[0]
    plt.close(fig)
    target = compact_png(source, tmp_path / "compact.png")
    before, after = (np.asarray(Image.open(p).convert("RGB"), dtype=float) for p in (source, target))
    assert after.shape == before.shape
    error = np.abs(after - before)  # a stress case: a colour map and 2,000 translucent points of many colours
    assert error.mean() < 1.5 and np.percentile(error, 99.9) < 40
    assert target.stat().st_size < source.stat().st_size
    assert not list(tmp_path.glob(".*"))  # no temporary sibling left
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert (np.asarray(Image.open(compact_png(tmp_path / "clear.png", tmp_path / "c.png")).convert("RGB")) == 255).all()


def test_publishing_only_the_report_figures_leaves_the_run_figures_behind(study, tmp_path):
    """--publish-figures report: the report's own figures are published, each run's figures are not (they stay
    in OUT/report.html), and no empty Figures section is written."""
    root, _ = study
    to = tmp_path / "published"
    result = CliRunner().invoke(main, ["report", "--out", str(root), "--to", str(to), "--publish-figures", "report"])
    assert result.exit_code == 0, result.output
    md = (to / "report.md").read_text()
    published = sorted(p.name for p in (to / "figures").iterdir())
    assert published == sorted(f"{REPORT_FILES}__{name}.png" for name in (
        "differences", "draws_1_reference__quick_fgsm_top20", "draws_2_correct__quick_fgsm_top40"))
    assert "fig4" not in md and "## Figures" not in md
    assert "fig4" in (root / "report.md").read_text()  # still in the results folder's own report
    lone = CliRunner().invoke(main, ["report", "--out", str(root), "--publish-figures", "report"])
    assert lone.exit_code == 2 and "give --to as well" in lone.output
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "one").symlink_to(root / "2_correct", target_is_directory=True)
    with pytest.raises(ValueError, match="publish_figures='some': expected 'all' or 'report'"):
        write_report(fresh, publish_to=tmp_path / "never", publish_figures="some")
    assert not (fresh / "report.html").exists() and not (tmp_path / "never").exists()  # nothing written


def test_a_listed_models_config_is_printed_once_and_referred_to_elsewhere(tmp_path):
    """An attack records its model's whole config; the report prints it in the model's row only and refers to
    it from the attack's config. Putting the model's config back gives the recorded config again; a model
    config the report does not list stays in full."""
    import xarray as xr

    from bayesrobust.results_report import MODEL_CONFIG_REFERENCE

    posterior = deterministic(build(ArchConfig("fc2", 8)))
    posterior.config.update(model="baseNN", preset={"base": {"lr": 0.001}}, test_accuracy=float("nan"))
    posterior.save(tmp_path / "models" / "quick" / "baseNN")
    listed = json.loads((tmp_path / "models" / "quick" / "baseNN" / "config.json").read_text())["config"]
    other = {**listed, "model": "fullBNN"}
    recorded = {"epsilon": 0.2, "model_config": listed,
                "runs": [{"attack": {"model_config": listed}}, {"attack": {"model_config": other}}]}
    attrs = {"kind": "attack", "config": json.dumps(recorded)}
    xr.Dataset({"x": ("i", [1.0])}, attrs=attrs).to_netcdf(tmp_path / "attack.nc", engine="h5netcdf")
    xr.Dataset({"x": ("i", [1.0])}, attrs={"kind": "attack", "config": "not json"}).to_netcdf(
        tmp_path / "other.nc", engine="h5netcdf")
    from bayesrobust.results_report import _result_provenance
    rows = _result_provenance(tmp_path, sorted(tmp_path.rglob("*.nc")) +
                              [tmp_path / "models" / "quick" / "baseNN" / "config.json"]).set_index("result")
    shown = json.loads(rows.loc["attack.nc", "config"])
    reference = MODEL_CONFIG_REFERENCE + "models/quick/baseNN"
    assert shown["model_config"] == reference and shown["runs"][0]["attack"]["model_config"] == reference
    assert shown["runs"][1]["attack"]["model_config"] == other  # not a listed model: in full
    assert json.loads(rows.loc["models/quick/baseNN", "config"]) == json.loads(json.dumps(listed))
    restored = json.loads(rows.loc["attack.nc", "config"].replace(f'"{reference}"', rows.loc["models/quick/baseNN",
                                                                                                "config"]))
    assert json.dumps(restored, sort_keys=True) == json.dumps(recorded, sort_keys=True)
    assert rows.loc["other.nc", "config"] == "not json"


def test_the_perturbation_table_shows_the_share_of_unperturbed_images():
    """A masked attack leaves images exactly as they were (‖x̃ − x‖₂ = 0); the table counts them per model."""
    import numpy as np
    import xarray as xr

    from bayesrobust.results_report import control_tables

    l2 = np.array([[0.0, 0.0, 0.0, 2.5], [4.0, 4.1, 3.9, 4.2]])
    ds = xr.Dataset({"perturbation_l2": (("model", "image"), l2)}, coords={"model": ["fullBNN_S50", "baseNN"]})
    (table,) = control_tables(ds)
    assert table.caption.startswith("Perturbation size")
    assert table.frame["unperturbed share"].to_dict() == {"fullBNN_S50": 0.75, "baseNN": 0.0}
    assert table.frame["median ‖x̃ − x‖₂ (own attack)"].to_dict() == {"fullBNN_S50": 0.0, "baseNN": 4.05}
