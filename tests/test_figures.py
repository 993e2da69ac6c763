"""Figures and the report from a tiny synthetic row trained end to end (no Snakemake)."""

import argparse
import json
import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from atlib import figures, maps
from atlib.attention import resize_to, spatial_map
from atlib.cli import cmd_figures, cmd_report
from atlib.engine import train
from atlib.models import load_run_model
from atlib.plan import Plan, build_plan, figure_paths, planned_figures
from atlib.report import TOO_SHORT, Learning, claim_results, claims_table, row_verdict, still_learning, write_report
from atlib.spec import RunSpec
from atlib.tables import aggregate, write_tables

CONFIG = {
    "name": "figs", "results": "results", "seeds": [0], "threads": 1, "device": "cpu",
    "datasets": {"synthetic": {"name": "synthetic", "synthetic_train": 256, "synthetic_test": 128, "size": 16}},
    "recipes": {"tiny": {"epochs": 2, "batch_size": 64, "lr": 0.05}},
    "tables": {"table1": {
        "title": "Table 1 on synthetic data", "dataset": "synthetic", "recipe": "tiny", "paper": "table1",
        "columns": ["student", "at", "kd", "teacher"],
        "rows": [{"student": "wrn-10-1", "teacher": "wrn-10-2", "paper_row": "wrn-16-1 <- wrn-16-2"}],
    }},
}
ROW = "wrn-10-1 <- wrn-10-2"
GROUPS = 3  # a WRN has three groups
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def train_plan(config: dict) -> Plan:
    """Every run of ``config`` under the current directory, teachers first (students check their checkpoint)."""
    plan = build_plan(config)
    order = sorted(plan.runs, key=lambda r: r not in plan.teachers)
    for run_id in order:
        spec = RunSpec.from_dict({**plan.runs[run_id], "tracking": {"enabled": False}})
        train(spec, Path(plan.run_dir(run_id)), log=lambda _: None)
    return plan


def render(plan: Plan) -> tuple[list[Path], Path]:
    """The pipeline after training: summary, tables, every figure, the report."""
    base = Path(plan.results) / plan.name
    write_tables(plan, aggregate(plan), base / "tables")
    paths = figures.write_figures(plan, base / "figures")
    return paths, write_report(plan, base / "tables", base / "figures", base / "report.md")


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # the plan's results/ paths are relative
        plan = train_plan(CONFIG)
        paths, report = render(plan)
        yield plan, paths, report


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def px(inches: float) -> int:
    return round(inches * maps.DPI)


def test_every_planned_figure_is_a_png_of_its_figure_size(done):
    plan, paths, _ = done
    names = sorted(p.name for p in paths)
    assert names == sorted(["table1-wrn-10-1-from-wrn-10-2-attention.png", "table1-wrn-10-1-from-wrn-10-2-curves.png",
                            "table1-errors.png"])
    assert [str(p) for p in paths] == figure_paths(plan, paths[0].parent)  # what Snakemake declares
    expected = {
        # 4 images x (input + 3 networks x 3 groups)
        "attention": (px(maps.PANEL * (1 + 3 * GROUPS)), px(maps.PANEL * 4 + maps.HEADER)),
        "curves": (px(figures.CURVES_SIZE[0]), px(figures.CURVES_SIZE[1])),
        "errors": (px(figures.DOTS_PANEL[0]), px(figures.DOTS_PANEL[1] + maps.HEADER)),  # one row, one metric
    }
    for path in paths:
        assert png_size(path) == expected[path.stem.rsplit("-", 1)[1]], path.name


def test_attention_figure_has_one_panel_per_image_and_group_showing_the_models_maps(done):
    plan, _, _ = done
    fig = figures.build_attention_figure(plan, "table1", ROW, images=3, seed=0)
    assert len(fig.axes) == 3 * (1 + 3 * GROUPS)
    assert "missing" not in fig.get_suptitle()
    assert {ax.get_gid() for ax in fig.axes if ax.get_gid()} == {
        f"{net}/g{g}/{i}" for net in ("teacher", "student", "AT") for g in range(GROUPS) for i in range(3)}
    # one test image of each class first (synthetic labels cycle 0..9 in a fixed shuffled order)
    source_y = torch.tensor([int(ax.get_title().split(": ")[1]) for ax in fig.axes[:: 1 + 3 * GROUPS]])
    assert len(set(source_y.tolist())) == 3
    # the AT panel of image 0, group 2 is the AT student's upsampled F^2_sum map of that image
    runs = figures.row_runs(plan, "table1", ROW, 0)
    model, metrics = load_run_model(plan.run_dir(runs["at"]))
    from atlib.data import load
    from atlib.spec import DataConfig

    x, _ = figures.fixed_test_images(load(DataConfig.from_config(plan.runs[runs["at"]]["dataset"])), 3)
    with torch.inference_mode():
        want = resize_to(spatial_map(model(x)[1][2], "sum", 2.0), (16, 16))[0]
    panel = next(ax for ax in fig.axes if ax.get_gid() == "AT/g2/0")
    assert panel.images[0].get_array().shape == (16, 16)
    assert torch.allclose(torch.as_tensor(panel.images[0].get_array().data), want, rtol=1e-5, atol=1e-7)
    assert all(ax.get_title().split("pred: ")[-1] for ax in fig.axes if ax.get_gid())
    assert runs["teacher"] == plan.teacher_of[runs["at"]] and metrics["model"] == "wrn-10-1"


def test_attention_figure_names_missing_runs_instead_of_failing(done):
    plan, _, _ = done
    fig = figures.build_attention_figure(plan, "table1", ROW, images=2, seed=7)  # seed 7 was never trained
    assert len(fig.axes) == 2  # the inputs only
    assert "missing: teacher, student, AT" in " ".join(fig.get_suptitle().split())  # the title may be wrapped
    assert fig.get_figwidth() == maps.PANEL * maps.MIN_COLUMNS  # wide enough to read it


def test_curves_are_the_runs_histories(done):
    plan, _, _ = done
    fig = figures.build_curves_figure(plan, "table1", ROW)
    lines = {line.get_gid(): line for line in fig.axes[0].get_lines() if line.get_gid()}
    assert set(lines) == {f"{c}/{k}" for c in ("student", "at", "kd") for k in ("test", "train")} | {"teacher/final"}
    for cell in plan.cells:
        (run,) = cell.runs
        history = json.loads((Path(plan.run_dir(run)) / "metrics.json").read_text())["history"]
        if cell.column == "teacher":
            assert lines["teacher/final"].get_ydata()[0] == pytest.approx(history[-1]["test_error"])
            continue
        for kind, style in (("test", "-"), ("train", "--")):
            line = lines[f"{cell.column}/{kind}"]
            assert list(line.get_xdata()) == [1, 2] and line.get_linestyle() == style
            assert list(line.get_ydata()) == pytest.approx([h[f"{kind}_error"] for h in history])


def test_dots_show_every_seed_our_median_and_the_paper(done):
    plan, _, _ = done
    fig = figures.build_dots_figure(plan, "table1")
    ax = fig.axes[0]
    artists = {a.get_gid(): a for a in [*ax.collections, *ax.get_lines()] if a.get_gid()}
    paper = {"student": 8.77, "at": 7.93, "kd": 7.41, "teacher": 6.31}
    for cell in plan.cells:
        errors = figures.final_errors(plan, cell.runs)
        assert len(errors) == 1
        assert list(artists[f"{cell.column}/runs"].get_offsets()[:, 1]) == pytest.approx(errors)
        assert artists[f"{cell.column}/median"].get_ydata()[0] == pytest.approx(errors[0])
        assert artists[f"{cell.column}/paper"].get_ydata()[0] == paper[cell.column]


def test_report_has_every_table_a_verdict_and_links_every_figure(done):
    plan, paths, report = done
    text = report.read_text()
    for table, layout in plan.tables.items():
        assert f"## {layout['title']}" in text
        assert (report.parent / "tables" / f"{table}.md").read_text().strip() in text
    assert f"- **{ROW}**: AT beats the student (exploratory): " in text and "ordering " in text
    assert "This config registers no confirmatory claims: every verdict below is exploratory" in text
    # one seed: the teacher's gap has no interval, so no claim reads as a finding
    assert "| AT beats the student " in text and "not testable here: the teacher is not clearly better" in text
    for path in paths:
        link = f"(figures/{path.name})"
        assert link in text and (report.parent / link[1:-1]).is_file()


def test_commands_write_the_figures_and_the_report(done, tmp_path):
    plan, _, _ = done  # the fixture keeps the working directory where results/ is
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    out = tmp_path / "figs"
    assert cmd_figures(argparse.Namespace(config=str(config), out=str(out))) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(p).name for p in figure_paths(plan, out))
    report = tmp_path / "report.md"
    assert cmd_report(argparse.Namespace(config=str(config), out=str(report))) == 0
    assert "## Table 1 on synthetic data" in report.read_text()


def test_attention_snapshot_is_the_figures_pixels_and_leaves_the_training_mode_alone(tmp_path):
    from atlib.models import build_model

    torch.manual_seed(0)
    student, teacher = build_model("wrn-10-1", 1, 10).train(), build_model("wrn-10-2", 1, 10).eval()
    x, y = torch.randn(2, 1, 16, 16), torch.tensor([3, 4])
    fig = maps.snapshot_figure(student, teacher, x, groups=[1, 2], y=y)
    assert len(fig.axes) == 2 * (1 + 2 * 2)  # two images x (input + 2 networks x 2 groups)
    pixels = maps.attention_snapshot(student, teacher, x, groups=[1, 2], y=y)
    assert pixels.shape == (px(maps.PANEL * 2 + maps.HEADER), px(maps.PANEL * 5), 4) and pixels.dtype == np.uint8
    from PIL import Image

    saved = maps.save(maps.snapshot_figure(student, teacher, x, groups=[1, 2], y=y), tmp_path / "s.png")
    assert (np.asarray(Image.open(saved).convert("RGBA")) == pixels).all()  # what the figure file shows
    assert student.training and not teacher.training


def _csv(columns: dict[str, dict[int, float]], paper: dict[str, float] | None = None,
         previous: dict[str, dict[int, float]] | None = None) -> pd.DataFrame:
    """One (row, metric) of a table CSV as ``atlib tables`` writes it; each column is seed -> error, and
    ``previous`` gives a column's errors at its test before the last, at epoch 8 of 12."""
    def line(column, errors):
        s = pd.Series(list(errors.values()), dtype=float)
        before = (previous or {}).get(column)
        return {"row": "r", "column": column, "metric": "top1", "median": s.median(), "n": len(errors),
                "planned": len(errors), "min": s.min(), "max": s.max(), "paper": (paper or {}).get(column),
                "seeds": " ".join(map(str, errors)), "values": " ".join(map(str, errors.values())),
                "previous": " ".join(str(before.get(k, math.nan)) for k in errors) if before else "",
                "previous_epoch": 8 if before else None, "epochs": 12}

    return pd.DataFrame([line(c, e) for c, e in columns.items()])


def _seeds(*errors: float) -> dict[int, float]:
    return dict(enumerate(errors))


def _table(cells: pd.DataFrame, confirmatory=None) -> dict[str, dict[str, str]]:
    """Claim -> its line in the Markdown claims table, by header."""
    lines = claims_table(claim_results(cells, confirmatory)).splitlines()
    headers = [c.strip() for c in lines[0].strip("|").split("|")]
    assert headers == ["claim", "kind", "pairs n", "mean gain (points)", "95% interval", "p", "p adj.", "p perm.",
                       "MDE", "verdict"]
    cells_of = ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    return {c[0]: dict(zip(headers, c, strict=True)) for c in cells_of}


def _claims(cells: pd.DataFrame, confirmatory=None) -> dict[str, list[str]]:
    """Claim -> pairs n, mean gain, interval, MDE and verdict of its line in the Markdown claims table."""
    keys = ("pairs n", "mean gain (points)", "95% interval", "MDE", "verdict")
    return {k: [line[h] for h in keys] for k, line in _table(cells, confirmatory).items()}


# the student of every claim test below; each other column differs from it, seed by seed, by a constant plus
# 0, -0.5, +0.5, 0, 0: so every d has sd sqrt(0.5 / 4), sd/sqrt(5) = sqrt(0.025) = 0.15811, a 95% half-width
# 2.776 * 0.15811 = 0.4389 and an MDE (2.776 + 0.941) * 0.15811 = 0.5877
STUDENT = _seeds(9.0, 8.5, 9.5, 9.2, 8.8)


def test_claims_pair_seeds_and_get_each_verdict_word():
    at = _seeds(8.0, 8.0, 8.0, 8.2, 7.8)  # student - at = 1 + (0, -0.5, 0.5, 0, 0)
    kd = _seeds(8.6, 8.6, 8.6, 8.8, 8.4)  # student - kd = 0.4 + ...
    at_kd = _seeds(8.5, 9.0, 8.0, 8.7, 8.3)  # at - at_kd = -0.5 + ..., kd - at_kd = 0.1 + ...
    teacher = _seeds(6.0, 6.1, 6.2, 6.0, 6.2)  # student - teacher = 3.0, 2.4, 3.3, 3.2, 2.6: mean 14.5 / 5 = 2.9
    got = _claims(_csv({"student": STUDENT, "at": at, "kd": kd, "at+kd": at_kd, "teacher": teacher}))
    assert list(got) == ["the teacher beats the student", "AT beats the student", "KD beats the student",
                         "AT+KD beats AT", "AT+KD beats KD"]  # no F-ActT column, so no claim about it
    assert got["the teacher beats the student"][:2] == ["5", "+2.90"]
    assert got["the teacher beats the student"][-1] == "reproduced"
    assert got["AT beats the student"] == ["5", "+1.00", "[+0.56, +1.44]", "0.59", "reproduced"]
    assert got["KD beats the student"] == ["5", "+0.40", "[-0.04, +0.84]", "0.59", "inconclusive: its interval "
                                           "rules out a gain above 0.84 points and a loss above 0.04"]
    # AT's five gains (1, 0.5, 1.5, 1, 1) are all positive: of the 32 sign flips only they and their mirror reach
    # |sum| = 5, so the exact p is 2/32
    assert _table(_csv({"student": STUDENT, "at": at}))["AT beats the student"]["p perm."] == "0.062"
    assert got["AT+KD beats AT"] == ["5", "-0.50", "[-0.94, -0.06]", "0.59", "not reproduced"]
    assert got["AT+KD beats KD"][:3] == ["5", "+0.10", "[-0.34, +0.54]"]


def test_a_teacher_not_clearly_better_makes_the_other_claims_not_testable():
    teacher = _seeds(8.6, 8.6, 8.6, 8.8, 8.4)  # student - teacher = 0.4 + ...: [-0.04, +0.84] contains 0
    at = _seeds(8.0, 8.0, 8.0, 8.2, 7.8)  # reproduced on its own
    cells = _csv({"student": STUDENT, "at": at, "teacher": teacher})
    got = _claims(cells)
    assert got["the teacher beats the student"][-1].startswith("inconclusive")
    gated = "not testable here: the teacher is not clearly better than the student (gap +0.40 [-0.04, +0.84])"
    assert got["AT beats the student"] == ["5", "+1.00", "[+0.56, +1.44]", "0.59", gated]
    assert row_verdict(cells).startswith(f"AT beats the student (exploratory): {gated} (+1.00 points)")
    one_seed = _claims(_csv({"student": {0: 9.0}, "at": {0: 8.0}, "teacher": {0: 6.0}}))
    assert one_seed["the teacher beats the student"] == ["1", "+3.00", "–", "–", "one paired seed: no interval"]
    assert one_seed["AT beats the student"][-1] == ("not testable here: the teacher is not clearly better than "
                                                    "the student (gap +3.00, one paired seed)")


def test_claims_pair_only_shared_seeds_and_a_fixed_teacher_with_every_student_seed():
    at = {0: 8.0, 1: 8.0, 3: 8.2, 4: 7.9}  # seed 2 unfinished: d = 1.0, 0.5, 1.0, 0.9, mean 3.4 / 4
    teacher = {0: 6.0}  # one planned run: d = 9.0 - 6, 8.5 - 6, 9.5 - 6, 9.2 - 6, 8.8 - 6, mean 15 / 5
    got = _claims(_csv({"student": STUDENT, "at": at, "teacher": teacher}))
    assert got["the teacher beats the student"][:2] == ["5", "+3.00"]
    assert got["AT beats the student"][:2] == ["4", "+0.85"]


def test_table2_and_ablation_claims_without_a_teacher():
    mappings = {"no AT": STUDENT, "F_sum": _seeds(8.0, 8.0, 8.0, 8.2, 7.8), "F2_sum": _seeds(7.9, 7.9, 7.9, 8.1, 7.7),
                "F4_sum": STUDENT, "F1_max": STUDENT}
    got = _claims(_csv(mappings))
    assert list(got) == ["F_sum beats no AT", "F2_sum beats no AT", "F4_sum beats no AT", "F1_max beats no AT",
                         "F2_sum beats F_sum", "F2_sum beats F4_sum", "F2_sum beats F1_max"]
    assert got["F4_sum beats no AT"] == ["5", "+0.00", "[+0.00, +0.00]", "0.00", "no verdict: every pair gains "
                                         "exactly +0.00 points (no spread, so no t interval)"]  # identical errors
    assert got["F2_sum beats F_sum"][:2] == ["5", "+0.10"] and got["F2_sum beats no AT"][-1] == "reproduced"
    groups = {"group1": STUDENT, "group2": STUDENT, "group3": STUDENT, "all": _seeds(8.0, 8.0, 8.0, 8.2, 7.8)}
    assert list(_claims(_csv(groups))) == [
        "AT in all groups beats AT in group1 only", "AT in all groups beats AT in group2 only",
        "AT in all groups beats AT in group3 only"]


def test_still_learning_is_the_students_median_drop_over_its_last_test_interval():
    # drops 9.5-9.0, 9.0-8.5, 9.5-9.5, 10.4-9.2, nan (seed 4 tested once): 0.5, 0.5, 0.0, 1.2 -> median 0.5
    before = {0: 9.5, 1: 9.0, 2: 9.5, 3: 10.4}
    student = _csv({"student": STUDENT}, previous={"student": before}).iloc[0]
    assert still_learning(student) == Learning(pytest.approx(0.5), 8, 12)
    assert str(still_learning(student)) == "the student's error still fell 0.50 points over epochs 8-12"
    risen = _csv({"student": STUDENT}, previous={"student": {k: v - 1 for k, v in STUDENT.items()}}).iloc[0]
    assert still_learning(risen).drop == 0.0  # error rose at the end: nothing left to learn
    assert still_learning(_csv({"student": STUDENT}).iloc[0]) is None  # a single test: nothing to compare


def test_a_gap_within_what_either_compared_column_still_learnt_is_too_short_to_judge():
    at = _seeds(8.0, 8.0, 8.0, 8.2, 7.8)  # gain 1 + (0, -0.5, 0.5, 0, 0): [+0.56, +1.44]
    at_kd = _seeds(8.5, 9.0, 8.0, 8.7, 8.3)  # gain over AT -0.5 + ...: [-0.94, -0.06]
    kd = _seeds(8.6, 8.6, 8.6, 8.8, 8.4)  # gain 0.4 + ...: [-0.04, +0.84]

    def words(student_drop, at_drop=None):  # every seed of the student (and of AT) fell by that much over 8-12
        previous = {"student": {k: v + student_drop for k, v in STUDENT.items()}}
        if at_drop is not None:
            previous["at"] = {k: v + at_drop for k, v in at.items()}
        cells = _csv({"student": STUDENT, "at": at, "kd": kd, "at+kd": at_kd}, previous=previous)
        return {k: v[-1] for k, v in _claims(cells).items()}, row_verdict(cells)

    got, _ = words(0.05)  # 0.56 > 0.05: the gap clears what the student still learnt
    assert got["AT beats the student"] == "reproduced" and got["AT+KD beats AT"] == "not reproduced"
    got, head = words(0.6)  # 0.56 no longer clears 0.6
    assert got["AT beats the student"] == (f"{TOO_SHORT} (reproduced otherwise): the student's error still fell "
                                           f"0.60 points over epochs 8-12, more than the interval clears")
    assert head.startswith(f"AT beats the student (exploratory): {TOO_SHORT} (reproduced otherwise)")
    assert got["KD beats the student"].startswith("inconclusive")  # an interval holding 0 stays inconclusive
    assert got["AT+KD beats AT"] == "not reproduced"  # neither AT+KD nor AT was still learning
    # AT's own fall counts too: D = max(0.05, 0.7) = 0.7 for "AT beats the student", and 0.7 for "AT+KD beats
    # AT" (AT+KD has no earlier test): -0.06 does not clear -0.7
    got, _ = words(0.05, at_drop=0.7)
    assert got["AT beats the student"] == (f"{TOO_SHORT} (reproduced otherwise): AT's error still fell 0.70 points "
                                           f"over epochs 8-12, more than the interval clears")
    assert got["AT+KD beats AT"].startswith(f"{TOO_SHORT} (not reproduced otherwise): AT's error still fell 0.70")
    teacher = _seeds(6.0, 6.1, 6.2, 6.0, 6.2)  # the teacher's own gap is a precondition, never gated
    cells = _csv({"student": STUDENT, "teacher": teacher, "at": at},
                 previous={"student": {k: v + 5 for k, v in STUDENT.items()}})
    assert _claims(cells)["the teacher beats the student"][-1] == "reproduced"
    assert _table(cells)["the teacher beats the student"]["kind"] == "precondition"


def test_confirmatory_claims_are_judged_on_their_adjusted_p_and_the_rest_are_exploratory():
    at = _seeds(8.0, 8.0, 8.0, 8.2, 7.8)  # gain 1 + (0, -0.5, 0.5, 0, 0): t = 1 / sqrt(0.025) = 6.32, p = 0.0032
    kd = _seeds(8.6, 8.6, 8.6, 8.8, 8.4)
    cells = _csv({"student": STUDENT, "at": at, "kd": kd})
    # Holm over a family of, say, 20 claims could lift AT's p to 20 * 0.0032 = 0.064: inconclusive
    held = _table(cells, {("at", "student"): 0.0032 * 5})
    assert held["AT beats the student"]["kind"] == "confirmatory"
    assert held["AT beats the student"]["p adj."] == "0.016" and held["AT beats the student"]["verdict"] == "reproduced"
    assert held["KD beats the student"]["kind"] == "exploratory" and held["KD beats the student"]["p adj."] == "–"
    lifted = _table(cells, {("at", "student"): 0.064})
    assert lifted["AT beats the student"]["p"] == "0.003"
    assert lifted["AT beats the student"]["verdict"].startswith("inconclusive")
    # a registered claim outside the paper's list is judged too, and listed first
    own = _table(cells, {("kd", "at"): 0.5})
    assert list(own)[0] == "KD beats AT" and own["KD beats AT"]["kind"] == "confirmatory"


def test_missing_seeds_are_named_in_the_verdict():
    cells = _csv({"student": STUDENT, "at": {0: 8.0, 1: 8.0, 3: 8.2, 4: 7.8}})
    cells["runs"] = [" ".join(f"d/r/m/{c}/seed{s}" for s in range(5)) for c in cells["column"]]
    cells["planned"] = 5
    verdict = _claims(cells)["AT beats the student"][-1]
    assert verdict.endswith("(missing: seed 2 of AT)")


def test_headline_keeps_the_ordering_against_the_paper_without_the_teacher():
    paper = {"at": 7.9, "student": 8.8, "teacher": 6.3}
    teacher = _seeds(5.0, 5.1, 5.2)
    # d = 8.0 - 9.0, 8.1 - 9.2, 8.3 - 9.1 = -1.0, -1.1, -0.8: mean -0.967, t = -10.97 with 2 df, p = 0.008
    swapped = row_verdict(_csv({"student": _seeds(8.0, 8.1, 8.3), "at": _seeds(9.0, 9.2, 9.1), "teacher": teacher},
                               paper))
    assert "AT beats the student (exploratory): not reproduced (-0.97 points)" in swapped
    # the teacher pairs are left out: one pair, student and AT, that disagrees
    assert swapped.endswith("ordering student < at; the paper's is at < student (0/1 pairs agree)")
    same = row_verdict(_csv({"student": _seeds(8.0, 8.1, 8.3), "at": _seeds(7.0, 7.2, 7.1)}, paper))
    assert same == ("AT beats the student (exploratory): reproduced (+1.03 points); ordering at < student, the same "
                    "as the paper's")
    assert row_verdict(_csv({"student": {}, "at": {}})) == "no finished runs yet"


def test_gain_curve_pairs_each_methods_seeds_with_the_students_per_budget(monkeypatch, tmp_path):
    plan = build_plan({
        "name": "curve", "results": str(tmp_path), "seeds": [0, 1, 2], "teacher_seed": 0,
        "datasets": {"d10": {"name": "synthetic", "per_class": 10, "subset_seed": "run"},
                     "d40": {"name": "synthetic", "per_class": 40, "subset_seed": "run"}},
        "tables": {f"t{n}": {"dataset": f"d{n}", "recipe": "paper", "columns": ["student", "at", "teacher"],
                             "rows": [{"student": "wrn-10-1", "teacher": "wrn-10-2"}]} for n in (40, 10)},
    })
    assert [(n, t) for n, t, _ in figures.gain_points(plan)] == [(10, "t10"), (40, "t40")]  # sorted by budget
    assert any(f.kind == "gains" for f in planned_figures(plan, tmp_path))
    errors = {  # (table, column) -> errors of seeds 0, 1, 2
        ("t10", "student"): (30.0, 32.0, 31.0), ("t10", "at"): (27.0, 30.0, 30.5),  # gains 3, 2, 0.5
        ("t40", "student"): (20.0, 21.0, 22.0), ("t40", "at"): (20.5, 21.0, 21.5),  # gains -0.5, 0, 0.5
    }
    by_dir = {}
    for cell in plan.cells:
        for run in cell.runs:
            if (cell.table, cell.column) in errors:
                by_dir[plan.run_dir(run)] = {"final_test_error": errors[cell.table, cell.column][int(run[-1])]}
    monkeypatch.setattr(figures, "finished", lambda d: by_dir.get(str(d)))
    got = figures.gains(plan).set_index("per_class")
    assert list(got["column"]) == ["at", "at"] and list(got["n"]) == [3, 3]
    assert got.loc[10, "median"] == 2.0 and got.loc[10, "mean"] == pytest.approx(5.5 / 3)
    # t10 gains 3, 2, 0.5: deviations 7/6, 1/6, -4/3, squares sum 3.1667, sd sqrt(3.1667 / 2) = 1.2583,
    # half-width t_{0.975,2} * sd / sqrt(3) = 4.303 * 0.72648 = 3.1261
    assert got.loc[10, "high"] - got.loc[10, "mean"] == pytest.approx(4.303 * math.sqrt(3.1666667 / 2 / 3), rel=1e-6)
    assert got.loc[40, "median"] == 0.0 and got.loc[40, "mean"] == pytest.approx(0.0)
    path = figures.gains_figure(plan, tmp_path / "gains.png")
    assert png_size(path)[0] == px(figures.GAINS_SIZE[0])
