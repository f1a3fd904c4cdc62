"""`icm report` without the model: the summary's new parts (the search's trace, the signal check's
sample), the page built from a real run of the runner over the keyword backend, and every way a
wrong input is refused. The page in a real browser: test_report_browser.py."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.commands.report import ReportJob, run_report
from icm_cli.algorithm.search import Step
from icm_cli.algorithm.search_trace import MAX_POINTS, CoreTrace

from report_fixtures import fake_run, write_run

runner = CliRunner()


def step(k: int, n: int) -> Step:
    return Step(k, n, 1.0 / (k + 1), float(k), 0.0, n - k, k, n, k, k // 2, (k, 0), ())


def test_a_long_trace_is_thinned_to_evenly_spaced_steps_keeping_the_first_and_the_last():
    trace = CoreTrace(0)
    for k in range(3001):
        trace.add(step(k, 3000))
    thin = trace.thinned()
    assert len(thin.iteration) == MAX_POINTS
    assert thin.iteration[0] == 0 and thin.iteration[-1] == 3000
    gaps = {b - a for a, b in zip(thin.iteration, thin.iteration[1:])}
    assert max(gaps) - min(gaps) <= 1
    # Running totals stay exact at every kept point.
    assert all(a == i // 2 for i, a in zip(thin.iteration, thin.accepted))
    short = CoreTrace(1)
    for k in range(5):
        short.add(step(k, 5))
    assert short.thinned() == short


@pytest.fixture(scope="module")
def run_files(tmp_path_factory) -> tuple[Path, Path]:
    return fake_run(tmp_path_factory.mktemp("run"))


def test_the_summary_keeps_the_search_trace_and_the_check_sample_read_two_ways(run_files):
    labels, _ = run_files
    summary = json.loads(labels.with_name(labels.name + ".summary.json").read_text())
    (trace,) = summary["search_trace"]
    n = len(trace["iteration"])
    assert 2 <= n <= MAX_POINTS and trace["iteration"][0] == 0
    assert all(len(trace[k]) == n for k in ("utility", "inconsistent", "proposals", "accepted", "temperature"))
    assert trace["accepted"][-1] <= trace["proposals"][-1] == summary["proposals"]
    sample = summary["readings"]
    assert sample["label_words"] == ["positive", "negative"]
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    assert len(sample["rows"]) == summary["signal"]["rows"]
    for r, y, many, zero in zip(sample["rows"], sample["labels"], sample["many_shot"], sample["zero_shot"]):
        assert abs(sum(many) - 1) < 1e-3 and abs(sum(zero) - 1) < 1e-3
        assert rows[r]["label"] == sample["label_words"][y]  # the sample's rows are OUT's, by position
    assert "sample" not in summary["signal"]  # the verdict stays as it was


def test_the_summary_file_keeps_lists_of_numbers_on_one_line(run_files):
    labels, _ = run_files
    text = labels.with_name(labels.name + ".summary.json").read_text()
    assert len(text.splitlines()) < 150  # about 80 lines before the trace and the sample came
    assert re.search(r'^      "utility": \[[-0-9., ]+\],$', text, re.M)
    assert json.loads(text) == json.loads(json.dumps(json.loads(text), indent=2))


def test_the_page_shows_the_run_verdict_plots_gold_and_rows_and_fetches_nothing(run_files, tmp_path):
    labels, gold = run_files
    out = tmp_path / "page.html"
    result = runner.invoke(app, ["report", str(labels), "--gold", str(gold), "-o", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    summary = json.loads(labels.with_name(labels.name + ".summary.json").read_text())
    for section in ("run", "signal", "confidence", "readings", "search", "gold", "rows"):
        assert f'<section id="{section}">' in page
    assert f'class="verdict {summary["signal"]["verdict"]}"' in page
    assert "accuracy against" in page and "95% interval" in page
    assert summary["config_hash"] in page and summary["model"] in page
    # Plots: the verdict's figures, the content spread, confidence, the two readings, the trace,
    # confusion, reliability and coverage.
    assert page.count("<svg") == 8
    # Self-contained: no script, no link, nothing with a source or a URL to fetch.
    # (References inside the page, url(#clip) and href="#section", are not fetches.)
    assert not re.search(r"<script|<link|<img|<image|<iframe|@import|url\((?!#)|\bsrc=|href=\"(?!#)", page)
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg",
                                                              "http://www.w3.org/1999/xlink"}
    # Each plot's ids are its own: clip paths of two plots never collide.
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    # Row text is escaped, never markup.
    assert "<b>&amp; today</b>" not in page and "&lt;b&gt;&amp;amp; today&lt;/b&gt;" in page


def test_without_gold_or_summary_the_page_says_what_it_leaves_out(run_files, tmp_path):
    labels, _ = run_files
    alone = tmp_path / "stdout-rows.jsonl"
    alone.write_text(labels.read_text())
    written = run_report(ReportJob(str(alone)))
    assert written == tmp_path / "stdout-rows.jsonl.report.html"
    page = written.read_text(encoding="utf-8")
    assert 'id="gold"' not in page and 'id="signal"' not in page and 'id="confidence"' in page
    assert "No summary beside" in page
    run_report(ReportJob(str(alone)))  # the default page beside LABELS is replaced, as the summary is


def test_label_words_keep_the_tasks_order_and_a_label_map_reads_gold_as_eval_does(run_files, tmp_path):
    labels, gold = run_files
    numeric = tmp_path / "gold-01.jsonl"
    numeric.write_text("".join(json.dumps({"id": g["id"], "label": 1 if g["label"] == "positive" else 0}) + "\n"
                               for g in map(json.loads, gold.read_text().splitlines())))
    out = tmp_path / "mapped.html"
    result = runner.invoke(app, ["report", str(labels), "--gold", str(numeric), "-o", str(out),
                                 "--map", "1=positive", "--map", "0=negative"])
    assert result.exit_code == 0, result.output
    direct = tmp_path / "direct.html"
    assert runner.invoke(app, ["report", str(labels), "--gold", str(gold), "-o", str(direct)]).exit_code == 0
    accuracy = re.compile(r'<span class="big">([0-9.]+%)')
    assert accuracy.search(out.read_text()).group(1) == accuracy.search(direct.read_text()).group(1)


# ---- refused inputs: one line naming the file, exit 2, nothing written


def refused(args: list[str], tmp_path: Path, *, names: str) -> str:
    before = set(tmp_path.rglob("*"))
    result = runner.invoke(app, ["report", *args])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("icm: error: ") and names in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert set(tmp_path.rglob("*")) == before  # no page, no temporary file
    return lines[0]


def test_a_missing_labels_file_is_one_line(tmp_path):
    refused([str(tmp_path / "nope.jsonl")], tmp_path, names="nope.jsonl")


def test_rows_without_a_label_or_confidence_are_not_icm_output(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text('{"id": 1, "text": "hello"}\n')
    assert "not the output of icm label" in refused([str(data)], tmp_path, names="data.jsonl:1")
    data.write_text('{"id": 1, "text": "hello", "label": "positive", "confidence": 7}\n')
    refused([str(data)], tmp_path, names="data.jsonl:1")


def test_a_summary_that_is_not_one_or_is_of_another_file_is_refused(run_files, tmp_path):
    labels, _ = run_files
    copy = tmp_path / "labels.jsonl"
    copy.write_text(labels.read_text())
    summary = tmp_path / "labels.jsonl.summary.json"
    summary.write_text("{not json")
    refused([str(copy)], tmp_path, names="labels.jsonl.summary.json")
    summary.write_text(json.dumps({"rows": 3}))
    assert "not an icm summary" in refused([str(copy)], tmp_path, names="labels.jsonl.summary.json")
    real = json.loads(labels.with_name(labels.name + ".summary.json").read_text())
    summary.write_text(json.dumps({**real, "rows": real["rows"] + 1}))
    assert "another file" in refused([str(copy)], tmp_path, names="labels.jsonl.summary.json")
    summary.write_text(json.dumps({**real, "wall_time_s": "soon"}))
    refused([str(copy)], tmp_path, names="labels.jsonl.summary.json")
    for broken in (dict(real, readings=dict(real["readings"], rows=[10**6] * len(real["readings"]["rows"]))),
                   dict(real, readings=dict(real["readings"], many_shot=[["x", "y"]] * len(real["readings"]["rows"]))),
                   dict(real, search_trace=[dict(real["search_trace"][0], utility=[1.0])]),
                   dict(real, signal="signal"), dict(real, label_counts=["positive"]),
                   dict(real, signal=dict(real["signal"], figures=[{"name": "x"}]))):
        summary.write_text(json.dumps(broken))
        refused([str(copy)], tmp_path, names="labels.jsonl.summary.json")


def test_an_existing_out_needs_force_and_a_missing_directory_is_named(run_files, tmp_path):
    labels, _ = run_files
    out = tmp_path / "page.html"
    out.write_text("mine")
    refused([str(labels), "-o", str(out)], tmp_path, names="page.html")
    assert out.read_text() == "mine"
    refused([str(labels), "-o", str(tmp_path / "no" / "page.html")], tmp_path, names="page.html")
    assert runner.invoke(app, ["report", str(labels), "-o", str(out), "--force"]).exit_code == 0
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_gold_with_no_shared_ids_or_labels_is_one_line(run_files, tmp_path):
    labels, _ = run_files
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"id": "x1", "label": "positive"}\n')
    refused([str(labels), "--gold", str(gold), "-o", str(tmp_path / "p.html")], tmp_path, names="gold.jsonl")
    gold.write_text('{"id": "t0001", "label": "yes"}\n')
    refused([str(labels), "--gold", str(gold), "-o", str(tmp_path / "p.html")], tmp_path, names="--map")


def test_label_report_needs_out_and_the_local_engine(tmp_path):
    data = Path(__file__).resolve().parents[1] / "examples" / "tweets-16.jsonl"
    for args, says in (([], "--report needs -o OUT"), (["-o", str(tmp_path / "o"), "--engine", "ray"], "--engine ray")):
        result = runner.invoke(app, ["label", str(data), "--report", "-q", *args])
        assert result.exit_code == 2 and says in result.stderr, result.output


def test_a_csv_labels_file_reads_as_its_jsonl_twin(run_files, tmp_path):
    import csv

    labels, gold = run_files
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    table = tmp_path / "labels.csv"
    with open(table, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "labels.csv.summary.json").write_text(labels.with_name(labels.name + ".summary.json").read_text())
    page = run_report(ReportJob(str(table), gold=str(gold))).read_text()
    twin = run_report(ReportJob(str(labels), str(tmp_path / "twin.html"), gold=str(gold))).read_text()
    accuracy = re.compile(r'<span class="big">([0-9.]+%)')
    assert accuracy.search(page).group(1) == accuracy.search(twin).group(1)
    assert page.count("<svg") == twin.count("<svg") == 8


def test_a_run_whose_labels_are_zero_shot_shows_the_cores_unused_reading_against_it(run_files, tmp_path):
    """Where the two cores did not confirm their departure, the labels are the zero-shot reading:
    the page sets the cores' reading (unused) against zero-shot, not zero-shot against itself."""
    labels, _ = run_files
    summary = json.loads(labels.with_name(labels.name + ".summary.json").read_text())
    sample = summary["readings"]
    departed = [list(reversed(p)) if k % 3 == 0 else p for k, p in enumerate(sample["zero_shot"])]
    sample.update(zero_shot_alone=True, many_shot=sample["zero_shot"], cores_reading=departed)
    copy = tmp_path / "labels.jsonl"
    copy.write_text(labels.read_text())
    copy.with_name(copy.name + ".summary.json").write_text(json.dumps(summary))
    page = run_report(ReportJob(str(copy))).read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "the two cores' reading, which this run did not use" in text
    moved = sum(1 for k in range(len(departed)) if k % 3 == 0)
    assert f"pick the same label on {len(departed) - moved:,} of {len(departed):,} rows" in text
    assert "None: on every sampled row the two readings pick the same label" not in text
    assert "The zero-shot reading (this run's labels" in text and "zero-shot log-odds" in text


def test_a_comparison_runs_page_says_its_readings_pair_both_orders_and_are_not_calibrated(tmp_path):
    """A comparison's sample is a row a point, its two orders read together, and its zero-shot
    reading is not centred on the batch: the page said 'calibrated' of it."""
    from icm_cli.foundation.config import CheckConfig, Config, CoreConfig, SearchConfig, TransferConfig
    from test_signal_comparisons import TASK, Reader, pairs

    config = Config(task=TASK, search=SearchConfig(initial_labels=2, iterations=20, seed=1),
                    core=CoreConfig(max_tokens=200, count=1), transfer=TransferConfig(chunk_size=16, zero_shot="on"),
                    check=CheckConfig(signal=True))
    labels = write_run(tmp_path, pairs(120), config, Reader(compares=1.5, query=0.0))
    page = run_report(ReportJob(str(labels))).read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "both orders of the pair read together" in text
    assert "(zero-shot, as read, not calibrated)" in text and "calibrated on the batch" not in text


def test_a_classification_runs_page_says_its_zero_shot_reading_is_calibrated(run_files):
    labels, _ = run_files
    page = run_report(ReportJob(str(labels))).read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "(zero-shot, calibrated on the batch)" in text and "both orders" not in text
