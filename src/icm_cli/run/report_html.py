"""The report page: one self-contained HTML file, the plots inline as SVG (report_plots), the
style in the page, no script, nothing linked: it opens from a disk with no network.

Sections, each shown when its data is there: the run, the signal verdict, the labels'
confidence, the many-shot reading against the zero-shot one, the search's trace, the scores
against gold, and the rows most worth a look.
"""

from __future__ import annotations

import html
import math
from typing import Iterable, Sequence

from . import report_plots as plots
from .report_data import (ReportData, ReportRow, RunView, against_zero_shot, confidently_wrong, disagreements,
                          least_confident)
from ..algorithm.search import argmax
from .signal_check import AGREEMENT, CONTENT, NO_CONTENT, ONE_LABEL

ROWS_SHOWN = 12  # per table of rows worth a look

CSS = """
:root { --ink: #1f2933; --muted: #52606d; --line: #e4e7eb; --bg: #f7f8fa; --signal: #2f7d3b; --weak: #b7791f;
        --none: #b0413e; --unchecked: #6b7280; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font: 15px/1.5 system-ui, -apple-system, "Segoe UI",
       Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 20px 48px; }
header h1 { margin: 0; font-size: 26px; } header p { margin: 2px 0 0; color: var(--muted); }
nav { margin: 14px 0 4px; display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 14px; }
nav a { color: #2d5f99; text-decoration: none; } nav a:hover { text-decoration: underline; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 22px;
          margin-top: 18px; }
h2 { margin: 0 0 10px; font-size: 19px; } h3 { margin: 18px 0 6px; font-size: 15px; }
p.explain { color: var(--muted); margin: 6px 0 10px; font-size: 14px; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 10px 18px; }
.fact b { display: block; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted);
          font-weight: 600; }
.fact span { font-size: 15px; overflow-wrap: anywhere; }
.verdict { display: inline-block; padding: 3px 14px; border-radius: 999px; color: #fff; font-weight: 700;
           font-size: 18px; letter-spacing: .03em; margin-right: 10px; vertical-align: middle; }
.verdict.signal { background: var(--signal); } .verdict.weak { background: var(--weak); }
.verdict.none { background: var(--none); } .verdict.unchecked { background: var(--unchecked); }
.headline { display: flex; flex-wrap: wrap; align-items: baseline; gap: 4px 14px; margin: 4px 0 10px;
            color: var(--muted); }
.big { font-size: 34px; font-weight: 700; color: var(--ink); line-height: 1.1; }
.warn { color: var(--none); }
figure { margin: 8px 0 4px; } figure svg { max-width: 100%; height: auto; display: block; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 8px 24px; align-items: start; }
@media (max-width: 760px) { .two { grid-template-columns: 1fr; } }
table { border-collapse: collapse; width: 100%; font-size: 14px; margin: 6px 0; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.text { overflow-wrap: anywhere; }
.bad { color: var(--none); font-weight: 600; } .ok { color: var(--signal); }
footer { margin-top: 20px; color: var(--muted); font-size: 13px; }
"""


def render(data: ReportData, version: str) -> str:
    """The whole page."""
    run = data.run
    sections = [
        _run(run, data) if run is not None else "",
        _signal(run) if run is not None else "",
        _confidence(data),
        _readings(run) if run is not None and run.readings is not None else "",
        _search(run) if run is not None and run.traces else "",
        _gold(data) if data.gold is not None else "",
        _rows(data),
    ]
    nav = [(key, name) for key, name in (("run", "Run"), ("signal", "Signal"), ("confidence", "Confidence"),
                                         ("readings", "Two readings"), ("search", "Search"),
                                         ("gold", "Against gold"), ("rows", "Rows to look at"))
           if f'id="{key}"' in "".join(sections)]
    links = "".join(f'<a href="#{key}">{name}</a>' for key, name in nav)
    notes = "".join(f"<p>{_e(n)}</p>" for n in data.notes)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>icm report: {_e(data.labels_source)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<header><h1>icm report</h1><p>{_e(data.labels_source)}: {len(data.rows):,} labelled rows</p></header>\n"
            f"<nav>{links}</nav>\n" + "\n".join(s for s in sections if s) +
            f"\n<footer>{notes}<p>Written by icm {_e(version)}. Self-contained: the plots are inline SVG "
            f"(matplotlib); nothing is fetched.</p></footer>\n</main>\n</body>\n</html>\n")


# ---- sections


def _run(run: RunView, data: ReportData) -> str:
    s = run.summary
    facts = [
        ("model", f"{s.model} ({s.backend})"), ("method", s.method), ("config hash / seed", f"{s.config_hash} / {s.seed}"),
        ("rows", f"{s.rows:,}: {s.core_rows:,} by the search on {s.cores} core(s), {s.transfer_rows:,} by transfer"
                 + (f", {s.fixed_rows:,} by a person (--fixed)" if s.fixed_rows else "")),
        ("time", f"{_seconds(s.wall_time_s)} (search {_seconds(s.search_s)}, transfer {_seconds(s.transfer_s)}, "
                 f"check {_seconds(s.check_s)})"),
        ("tokens scored", f"{s.tokens_scored:,} of {s.tokens_requested:,} in prompts ({s.prefix_reuse:.0%} reused)"),
        ("data hash", s.data_hash),
    ]
    if s.core_choice:
        facts.append(("cores (auto)", s.core_choice))
    if s.zero_shot_rule:
        facts.append(("zero-shot reading", s.zero_shot_rule))
    if s.departure:
        facts.append(("departure", s.departure))
    total = sum(s.label_counts.values()) or 1
    counts = _table(("label", "rows", "share"), [
        (_e(k), _num(f"{v:,}"), _num(f"{v / total:.1%}")) for k, v in _ordered(s.label_counts, data.label_words)])
    return _section("run", "The run", "".join(f'<div class="fact"><b>{_e(k)}</b><span>{_e(v)}</span></div>'
                                             for k, v in facts).join(('<div class="facts">', "</div>"))
                    + "<h3>Labels</h3>" + counts)


def _signal(run: RunView) -> str:
    sig = run.signal
    if sig is None:
        return _section("signal", "Is there signal?", '<p class="explain">This run skipped the gold-free signal '
                        "check (--no-check).</p>")
    head = f'<p><span class="verdict {_e(sig.verdict)}">{_e(sig.verdict)}</span>{_e(sig.reason)}</p>'
    rules = (f"The check reads a sample of {sig.rows:,} labelled rows again, with nothing but the model. "
             f"<b>none</b>: the content ratio's interval reaches down to {NO_CONTENT}, or one label takes "
             f"{ONE_LABEL:.0%} of the rows. <b>signal</b>: the content ratio's interval is above {CONTENT} and the "
             f"zero-shot kappa's above {AGREEMENT}. <b>weak</b>: anything between. It rules out noise, not error: "
             f"labels that follow a salient feature other than the asked-for concept pass it.")
    body = head + f'<p class="explain">{rules}</p>'
    if sig.figures:
        body += _figure(plots.verdict_figures(sig.figures))
        body += _table(("figure", "value", "95% interval", "what it says"), [
            (_e(f.name.replace("_", " ")), _num(_value(f.value)),
             _num(f"{_value(f.interval[0])} to {_value(f.interval[1])}" if f.interval else "-"), _e(f.meaning))
            for f in sig.figures])
    body += "".join(f'<p class="warn">Warning: {_e(w)}</p>' for w in sig.warnings)
    if run.readings is not None:
        judged = ("The zero-shot reading (this run's labels: its two cores did not confirm their departure) "
                  if run.readings.zero_shot_alone else "The many-shot reading ")
        body += ("<h3>What the content ratio compares</h3><p class=\"explain\">" + judged + "of each "
                 "sampled row, and of the same row with its letters shuffled (spaces, digits and punctuation "
                 "kept). Readings that follow the words spread wider on the rows.</p>"
                 + _figure(plots.content_spread(run.readings)))
    return _section("signal", "Is there signal?", body)


def _confidence(data: ReportData) -> str:
    text = ("Each label's confidence (its probability) across the rows that got it; core rows were labelled "
            "by the search, transfer rows afterwards with the core's labels as context.")
    return _section("confidence", "Confidence per label", f'<p class="explain">{text}</p>'
                    + _figure(plots.confidence_histograms(data.rows, data.label_words)))


def _readings(run: RunView) -> str:
    assert run.readings is not None
    sample = against_zero_shot(run.readings)
    words = sample.label_words
    pairs = [(argmax(a), argmax(b)) for a, b in zip(sample.many_shot, sample.zero_shot)]
    same, n = sum(a == b for a, b in pairs), len(pairs)
    kappa = next((f for f in (run.signal.figures if run.signal else []) if f.name == "zero_shot_kappa"), None)
    told = f" (kappa {kappa.value:.2f})" if kappa is not None else ""
    whose = ("the run's own reading" if not sample.zero_shot_alone else
             "the two cores' reading, which this run did not use: they did not confirm their departure from "
             "zero-shot, so every label is the zero-shot reading")
    what = (f"its probability of '{words[0]}' (both orders of the pair read together: the first order's "
            f"log-odds less the second's)" if sample.both_orders else f"its probability of '{words[0]}'")
    alone = "calibrated on the batch" if sample.centred else "as read, not calibrated"
    text = (f"Each point is one of the {n:,} rows the signal check sampled: {what} read after the core's "
            f"demonstrations (many-shot: {whose}) against read alone (zero-shot, {alone}). The two pick the "
            f"same label on {same:,} of {n:,} rows{told}. Points far from the diagonal are rows the "
            f"demonstrations moved; red ones changed label.")
    cross = _table(("many-shot \\ zero-shot", *words), [
        (_e(w), *(_num(f"{sum(p == (a, b) for p in pairs):,}") for b in range(len(words))))
        for a, w in enumerate(words)])
    return _section("readings", "Many-shot against zero-shot", f'<p class="explain">{_e(text)}</p>'
                    f'<div class="two"><div>{_figure(plots.readings_scatter(sample))}</div>'
                    f"<div><h3>Labels by each reading</h3>{cross}</div></div>")


def _search(run: RunView) -> str:
    s = run.summary
    constrained = any(any(t.inconsistent) for t in run.traces)
    text = ("U = alpha * P - I: how well the core's labels predict each other (P, weighted by alpha) less the "
            "number of logical inconsistencies among them (I). Each iteration proposes one label and keeps it "
            "when U rises, or, while the temperature is high, at random; the last panel is the share of "
            "proposals kept.")
    if not constrained:
        text += " This task's labels bind each other by no constraint, so I stays 0."
    facts = (f"{s.iterations:,} iterations, {s.accepted:,} of {s.proposals:,} proposals accepted "
             f"({s.acceptance_rate:.0%}); {s.converged_cores} of {s.cores} core(s) converged; final U "
             f"{', '.join(f'{u:.3f}' for u in s.final_utility)}; {s.inconsistencies_left} inconsistencies left.")
    first = min(t.iteration[0] for t in run.traces)
    if first > 0 or len(run.traces) < s.cores:
        facts += " This run was resumed: the trace covers the search from where it resumed."
    return _section("search", "The search", f'<p class="explain">{_e(text)}</p><p>{_e(facts)}</p>'
                    + _figure(plots.search_trace(run.traces, constrained)))


def _gold(data: ReportData) -> str:
    gold = data.gold
    assert gold is not None
    a = gold.agreement
    cov = a.coverage
    head = (f'<div class="headline"><span class="big">{a.accuracy:.1%}</span><span>accuracy against '
            f"{_e(gold.source)}, 95% interval {a.ci95[0]:.1%} to {a.ci95[1]:.1%}, on {a.n:,} rows; Cohen's kappa "
            f"{a.kappa:.3f}</span></div>")
    if cov.missing_in_pred or cov.missing_in_gold:
        head += (f'<p class="explain">{cov.missing_in_pred:,} of {cov.gold_total:,} gold ids have no label here; '
                 f"{cov.missing_in_gold:,} of {cov.pred_total:,} labelled ids are not in gold.</p>")
    per_class = _table(("class", "precision", "recall", "F1", "support"), [
        (_e(k), _num(f"{c.precision:.3f}"), _num(f"{c.recall:.3f}"), _num(f"{c.f1:.3f}"), _num(f"{c.support:,}"))
        for k, c in a.per_class.items()])
    chance = 1.0 / max(2, len(data.label_words))
    return _section("gold", "Against gold", head + '<div class="two"><div><h3>Per class</h3>' + per_class
                    + "</div><div><h3>Confusion</h3>" + _figure(plots.confusion_heatmap(a)) + "</div></div>"
                    + '<div class="two"><div><h3>Reliability</h3><p class="explain">Accuracy of the rows in each '
                    "confidence bin: on the diagonal, a label's confidence is the chance it is right.</p>"
                    + _figure(plots.reliability(gold.reliability, chance))
                    + "</div><div><h3>Accuracy against coverage</h3><p class=\"explain\">Keep only the rows at "
                    "or above a confidence cut-off: what share is kept, and how accurate it is.</p>"
                    + _figure(plots.coverage_curve(gold.coverage, a.accuracy)) + "</div></div>")


def _rows(data: ReportData) -> str:
    gold = data.gold
    body = ("<h3>Least confident</h3>" + _row_table(least_confident(data.rows, ROWS_SHOWN), data))
    readings = data.run.readings if data.run is not None else None
    if readings is not None:
        split = disagreements(data.rows, against_zero_shot(readings), ROWS_SHOWN)
        unused = (" Here the many-shot reading is the two cores', which the labels did not use (their departure "
                  "from zero-shot was not confirmed)." if readings.zero_shot_alone else "")
        body += ("<h3>Where the two readings disagree</h3><p class=\"explain\">Sampled rows whose many-shot and "
                 "zero-shot readings pick different labels; the probabilities are of the run's label." + unused
                 + "</p>")
        body += _table(("row", "text", "label", "many-shot", "zero-shot", *(("gold",) if gold else ())), [
            (_num(str(d.row.position + 1)), _text(d.row.text), _e(d.row.label),
             _num(f"{d.many_shot} ({d.many_shot_p:.2f})"), _num(f"{d.zero_shot} ({d.zero_shot_p:.2f})"),
             *((_gold_cell(d.row, data),) if gold else ())) for d in split]) if split else \
            "<p>None: on every sampled row the two readings pick the same label.</p>"
    if gold is not None:
        body += "<h3>Most confident and wrong</h3>" + _row_table(confidently_wrong(data.rows, gold, ROWS_SHOWN), data)
    return _section("rows", "Rows worth a look", body)


# ---- pieces


def _row_table(rows: Sequence[ReportRow], data: ReportData) -> str:
    if not rows:
        return "<p>None.</p>"
    gold = data.gold is not None
    return _table(("row", "text", "label", "confidence", "source", *(("gold",) if gold else ())), [
        (_num(str(r.position + 1)), _text(r.text), _e(r.label), _num(f"{r.confidence:.3f}"), _e(r.source or "-"),
         *((_gold_cell(r, data),) if gold else ())) for r in rows])


def _gold_cell(row: ReportRow, data: ReportData) -> str:
    assert data.gold is not None
    label = data.gold.gold.get(row.position)
    if label is None:
        return "-"
    return f'<span class="{"ok" if data.gold.correct[row.position] else "bad"}">{_e(label)}</span>'


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Cells arrive escaped (a number as _num's right-aligned cell); the header is escaped here,
    and right-aligned over a column of numbers."""
    body = [list(row) for row in rows]
    numeric = [bool(body) and all(row[k].startswith('<td class="num"') for row in body) for k in range(len(head))]
    cols = "".join(f'<th class="num">{_e(h)}</th>' if n else f"<th>{_e(h)}</th>" for h, n in zip(head, numeric))
    cells = "".join("<tr>" + "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row) + "</tr>"
                    for row in body)
    return f"<table><thead><tr>{cols}</tr></thead><tbody>{cells}</tbody></table>"


def _num(text: str) -> str:
    return f'<td class="num">{_e(text)}</td>'


def _text(text: str) -> str:
    return f'<td class="text">{_e(text)}</td>'


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}">\n<h2>{_e(title)}</h2>\n{body}\n</section>'


def _figure(svg: str) -> str:
    return f"<figure>{svg}</figure>"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _value(value: float) -> str:
    # A content ratio is infinite where the shuffled rows' readings did not vary at all.
    return f"{value:.3f}" if math.isfinite(value) else ("infinite" if value > 0 else "-infinite")


def _seconds(value: float) -> str:
    value = float(value)
    if value >= 3600:
        return f"{int(value // 3600)} h {int(value % 3600 // 60):02d} min"
    return f"{int(value // 60)} min {int(value % 60):02d} s" if value >= 60 else f"{value:.1f} s"


def _ordered(counts: dict[str, int], words: Sequence[str]) -> list[tuple[str, int]]:
    return [(w, counts[w]) for w in words if w in counts] + sorted((k, v) for k, v in counts.items() if k not in words)
