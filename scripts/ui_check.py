#!/usr/bin/env python3
"""Check what a person sees of a finished DAG in a real (headless Chromium) browser: MLflow's UI and the
Snakemake HTML report.

    .venv/bin/python scripts/ui_check.py WORKDIR [--config tests/configs/synthetic.yaml] [--out docs]

WORKDIR is a Snakemake working folder where the config's DAG has finished (results/mlflow.db,
results/<name>/...). The script runs ``atlib browse CONFIG --port 0`` there, as a person would, with no
environment activated, and opens the pages it prints: the first experiment's runs list ranked by test error
(OUT/mlflow-runs.png) and the first table's summary run (OUT/mlflow-summary.png). It reads both as the browser
rendered them, at the screenshot's size, and checks through MLflow's REST API that what they show exists: every
run named as atlib names it, its test error shown and the runs in order of it, the summary run's medians and
artifacts. It then opens results/<name>/report.html (made with ``snakemake --report`` when missing), searches it
as a person would (for every result) and checks that each figure and table is listed. Prints one line per failed
check; exit status 0 when none failed. Needs Chromium (Debian: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from atlib.plan import load_plan
from atlib.tracking import (
    EXPERIMENT_KIND,
    RANKED_NAME,
    ranked_url,
    run_name,
    summary_experiment,
    summary_metrics,
    ui_url,
)

ROOT = Path(__file__).resolve().parents[1]
WINDOW = "1400,900"
BUDGET_MS = 15000  # virtual time for MLflow's UI to fetch and draw: its runs table needs about 3 s
# A person's search of the Snakemake report for every result ("re:." matches every path): the report has no
# URL per view, so the page is opened with this script added, which types the search and presses Enter.
SEARCH_ALL = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const input = document.querySelector("input[placeholder='Search...']");
  Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, "value").set.call(input, "re:.");
  input.dispatchEvent(new Event("input", {bubbles: true}));
  input.dispatchEvent(new KeyboardEvent("keypress", {key: "Enter", charCode: 13, keyCode: 13, bubbles: true}));
}, 500));
</script>"""


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def browse(url: str, *, screenshot: Path | None = None, window: str = WINDOW) -> str:
    """The page's DOM once rendered in a ``window``-sized browser (no scripts or styles), and a screenshot of it
    when asked (one browser run does both): a fresh profile each time, so that the UI opens as it does for a first
    visitor. The MLflow runs list draws only the columns that fit the window: in the DOM means on the screen."""
    with tempfile.TemporaryDirectory() as profile:
        shot = [f"--screenshot={screenshot}"] if screenshot else []
        cmd = [chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--virtual-time-budget={BUDGET_MS}", f"--window-size={window}",
               "--dump-dom", *shot, url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    return re.sub(r"<(script|style)\b.*?</\1>", "", out, flags=re.S)


def text_of(dom: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)).replace("&amp;", "&").replace("&lt;", "<")


def drawn(png: Path) -> bool:
    """Whether a screenshot shows a page: more than a blank or a spinner (a few colours)."""
    from PIL import Image

    if not png.is_file():
        return False
    with Image.open(png) as im:
        return len(im.convert("RGB").getcolors(1 << 20) or []) > 50


def api(base: str, endpoint: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{endpoint}", data=data,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as response:
        return json.load(response)


def runs_of(base: str, experiment_id: str) -> list[dict]:
    return api(base, "runs/search", {"experiment_ids": [experiment_id], "max_results": 1000}).get("runs", [])


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def artifacts(base: str, run_id: str, path: str = "") -> set[str]:
    files = api(base, f"artifacts/list?run_id={run_id}&path={path}").get("files", [])
    return {f["path"] for f in files if not f.get("is_dir")} | {
        p for f in files if f.get("is_dir") for p in artifacts(base, run_id, f["path"])}


def js_number(value: float) -> str:
    """A metric as MLflow's UI writes it (JavaScript's shortest round trip: 15, not 15.0)."""
    return f"{int(value)}" if value == int(value) else repr(value)


def check_mlflow(workdir: Path, plan, out: Path, base: str, pages: list[tuple[str, str]], fail: list[str]) -> None:
    report = workdir / plan.results / plan.name
    exps = {e["name"]: e for e in api(base, "experiments/search", {"max_results": 1000})["experiments"]}
    for name in [*plan.experiments, summary_experiment(plan.name)]:
        kind = {t["key"]: t["value"] for t in exps[name].get("tags", [])}.get(EXPERIMENT_KIND[0])
        if kind != EXPERIMENT_KIND[1]:
            fail.append(f"experiment {name}: {EXPERIMENT_KIND[0]} is {kind!r}, not {EXPERIMENT_KIND[1]!r}")

    first = exps[plan.experiments[0]]["experiment_id"]
    runs = runs_of(base, first)
    names, errors = {}, {}
    for r in runs:  # the names the list shows are those atlib gives: checked against each run's metrics.json
        config = json.loads((workdir / plan.run_dir(tags(r)["run"]) / "metrics.json").read_text())["config"]
        names[r["info"]["run_name"]] = run_name(config)
        errors[r["info"]["run_name"]] = {m["key"]: m["value"] for m in r["data"]["metrics"]}["test_error"]
    for shown, expected in names.items():
        if shown != expected:
            fail.append(f"run named {shown!r}, expected {expected!r}")
    if len(names) != len(runs):
        fail.append(f"{len(runs)} runs but {len(names)} distinct names")
    url = ranked_url(first, base=base)
    if (url, f"{plan.experiments[0]}: its runs, ranked by test error") not in pages:
        fail.append(f"atlib browse does not print {url} for experiment {plan.experiments[0]}: {pages}")
    page = text_of(browse(url, screenshot=out / "mlflow-runs.png"))
    missing = [n for n in names if n not in page]
    if not runs or missing or "Run Name" not in page:
        fail.append(f"runs list {url} does not show the runs {missing or '(none in the store)'}")
    # the view's name, its test error column with each run's value, and the runs ranked by it, lowest first
    shown = [n for n in sorted(names, key=page.find) if n in page]
    ranked = sorted(names, key=lambda n: (errors[n], page.find(n)))
    values = [js_number(errors[n]) for n in ranked if js_number(errors[n]) not in page]
    if RANKED_NAME not in page or "test_error" not in page or values or shown != ranked:
        fail.append(f"runs list {url} does not rank the runs by a test_error column on screen: view "
                    f"{RANKED_NAME in page}, values missing {values}, order {shown} instead of {ranked}")
    if not drawn(out / "mlflow-runs.png"):
        fail.append(f"{out / 'mlflow-runs.png'} is blank")

    table, exp_id, run_id, _ = next(csv.reader((report / "mlflow-summary.tsv").open(), delimiter="\t"))
    run = api(base, f"runs/get?run_id={run_id}")["run"]
    logged = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
    with open(report / "tables" / f"{table}.csv", newline="") as f:
        medians = summary_metrics(list(csv.DictReader(f)))
    if logged != medians:
        fail.append(f"summary run {run_id}: metrics {logged}, the table's medians {medians}")
    files = artifacts(base, run_id)
    figures = {f"figures/{p.name}" for p in (report / "figures").glob(f"{table}-*.png")}
    wanted = {f"tables/{table}.md", f"tables/{table}.csv", "report.md", "runs.csv", *figures}
    if not figures or not wanted <= files:
        fail.append(f"summary run {run_id}: artifacts {sorted(files)} lack {sorted(wanted - files)}")
    links = re.findall(r"#/experiments/(\d+)/runs/(\w+)", tags(run).get("mlflow.note.content", ""))
    linked = {rid for _, rid in links}
    if not linked or not linked <= {r["info"]["run_id"] for e in plan.experiments
                                    for r in runs_of(base, exps[e]["experiment_id"])}:
        fail.append(f"summary run {run_id}: its note links {sorted(linked)}, not runs of the config")
    url = ui_url(exp_id, run_id, base=base)
    if url not in [u for u, _ in pages]:
        fail.append(f"atlib browse does not print the summary run {url}: {pages}")
    # tall enough for its metrics
    page = text_of(browse(url, screenshot=out / "mlflow-summary.png", window="1400,1300"))
    missing = [k for k in [run["info"]["run_name"], *medians] if k not in page]
    if missing:
        fail.append(f"summary run page {url} does not show {missing}")
    if not drawn(out / "mlflow-summary.png"):
        fail.append(f"{out / 'mlflow-summary.png'} is blank")


def check_report(workdir: Path, plan, config: Path, fail: list[str]) -> None:
    report = workdir / plan.results / plan.name
    html = report / "report.html"
    if not html.is_file():
        subprocess.run([str(Path(sys.executable).with_name("snakemake")), "-s", str(ROOT / "workflow/Snakefile"),
                        "--directory", str(workdir), "--configfile", str(config), "--report", str(html)],
                       capture_output=True, timeout=600, check=True)
    with tempfile.TemporaryDirectory() as tmp:
        searched = Path(tmp, "report.html")
        head, end, tail = html.read_text().rpartition("</body>")  # the last: a script of the report writes one
        searched.write_text(f"{head}{SEARCH_ALL}{end}{tail}")
        page = text_of(browse(searched.as_uri()))
    wanted = [p.name for p in sorted((report / "figures").glob("*.png"))]
    wanted += [f"{t}.md" for t in plan.tables] + ["report.md"]
    missing = [name for name in wanted if name not in page]
    if missing or not wanted:
        fail.append(f"{html} opened in Chromium and searched for every result does not list {missing}")


def start_browse(workdir: Path, config: Path, expected: int) -> tuple[subprocess.Popen, str, list[tuple[str, str]]]:
    """``atlib browse CONFIG --port 0`` in the working folder, by its script's path with the environment's folder off
    PATH, as from a fresh shell; its base URL and the ``expected`` pages it prints once its server answers."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != bin_dir)
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV" and not k.startswith("MLFLOW_")} | {"PATH": path}
    proc = subprocess.Popen([str(Path(bin_dir, "atlib")), "browse", str(config), "--port", "0"], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    head = proc.stdout.readline()  # printed once the server answers
    match = re.match(r"MLflow's UI on (http://\S+) ", head)
    if match is None:
        stop_browse(proc)
        raise RuntimeError(f"atlib browse printed {head!r}: {proc.stderr.read()[-2000:]}")
    lines = [proc.stdout.readline().split(None, 1) for _ in range(expected)]
    return proc, match.group(1), [(url, what.strip()) for url, what in lines]


def stop_browse(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a person stops it: atlib browse then stops its server."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("workdir", type=Path, help="Snakemake working folder of a finished DAG")
    p.add_argument("--config", type=Path, default=ROOT / "tests/configs/synthetic.yaml")
    p.add_argument("--out", type=Path, default=ROOT / "docs", help="folder of the screenshots (default docs/)")
    args = p.parse_args(argv)
    if chromium() is None:
        print("ui_check: Chromium is not installed (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    workdir, config, out = args.workdir.resolve(), args.config.resolve(), args.out.resolve()
    os.chdir(workdir)  # the plan's paths (results/...) are relative to the working folder
    plan = load_plan(str(config))
    out.mkdir(parents=True, exist_ok=True)
    fail: list[str] = []
    try:
        proc, base, pages = start_browse(workdir, config, 2 * len(plan.experiments) + len(plan.tables))
    except RuntimeError as e:
        print(f"ui_check: {e}", file=sys.stderr)
        return 1
    try:
        check_mlflow(workdir, plan, out, base, pages, fail)
    finally:
        stop_browse(proc)
    check_report(workdir, plan, config, fail)
    for line in fail:
        print(f"ui_check: FAIL {line}")
    print(f"ui_check: {'all checks passed' if not fail else f'{len(fail)} checks failed'}; screenshots in {out}")
    return 1 if fail else 0


if __name__ == "__main__":
    sys.exit(main())
