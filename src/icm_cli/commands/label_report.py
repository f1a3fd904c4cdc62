"""What `icm label` prints for people: the dry run's plan and the run's summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.table import Table

from ..foundation.config import Config


def print_dry_run(run_input: Any, cfg: Config, probe: bool) -> None:
    from ..backends.tokens import token_counter
    from ..run.dry_run import dry_run, probe_rate

    count, how = token_counter(cfg.backend)
    report = dry_run(run_input, cfg, count)
    console = Console(soft_wrap=True)
    console.print(f"[bold]icm label --dry-run[/bold]: config {cfg.digest()}, {cfg.task.type}, labels "
                  f"{list(cfg.task.labels)}, method {report.method}")
    core_examples = sum(c.examples for c in report.cores)
    console.print(f"{report.rows:,} rows -> {report.examples:,} examples: {core_examples:,} in {len(report.cores)} "
                  f"core(s) labelled by {report.method}, {report.transfer_examples:,} by transfer (tokens: {how})")
    if report.fixed_rows:
        console.print(f"--fixed: {report.fixed_rows:,} rows keep a person's label; {_fixed_demos(report.fixed_demos, report.fixed_rows, cfg)}")
    if report.cores:
        table = Table("core", "examples", "constraints", "tokens / U evaluation", "from scratch", "max evaluations",
                      "expected tokens")
        for c, est in enumerate(report.cores[:20]):
            table.add_row(str(c + 1), str(est.examples), str(est.constraints), f"{est.tokens_per_evaluation:,}",
                          f"{est.tokens_from_scratch:,}", f"{est.max_evaluations:,}", f"{est.expected_tokens:,}")
        console.print(table)
    rate = probe_rate(cfg, run_input) if probe else None

    def when(tokens: int) -> str:
        return f", about {duration(tokens / rate)} at {rate:,.0f} tokens/s (measured)" if rate else ""

    console.print(f"search phase: about {report.search_tokens():,} tokens{when(report.search_tokens())} "
                  f"(at most {report.search_tokens_bound():,})")
    console.print(f"transfer phase: about {report.transfer_tokens:,} tokens{when(report.transfer_tokens)}")
    if report.cores and report.transfer_examples and cfg.transfer.zero_shot != "off":
        # The zero-shot reading is each row alone: about its own tokens once more (zero_shot_rule.py).
        alone = report.transfer_tokens // len(report.cores)
        how_often = "always" if cfg.transfer.zero_shot == "on" else "if a sample shows the readings disagree"
        console.print(f"  + about {alone:,} tokens{when(alone)} for each row's zero-shot reading "
                      f"(transfer.zero_shot: {cfg.transfer.zero_shot}: {how_often})")
    if report.cores and cfg.core.count == "auto":
        console.print(f"  + core.count auto: where the first core's reading departs from zero-shot, a second core "
                      f"of {cfg.core.budget(1):,} tokens of demonstrations (core.second_tokens; its search costs "
                      f"less than the first's {report.search_tokens():,} tokens) and a transfer read after it "
                      f"(about {report.transfer_tokens:,})")
    if not probe:
        console.print("time: pass --probe to load the model and measure its speed on these prompts")
    for k, (prompt, conts) in enumerate(report.first_prompts):
        console.rule(f"prompt {k + 1}, exactly as the model reads it (after a BOS token)")
        sys.stdout.write(prompt + "\n")
        sys.stdout.flush()
        console.rule(f"scored continuations: {', '.join(map(repr, conts))}")


def _fixed_demos(demos: int, rows: int, cfg: Config) -> str:
    """How many fixed rows the cores hold as demonstrations, and why not all."""
    if demos == rows:
        return "each core holds all of them as demonstrations"
    cap = cfg.core.max_tokens if cfg.core.fixed_tokens is None else cfg.core.fixed_tokens
    return (f"each core holds {demos:,} of them as demonstrations (core.fixed_tokens caps them at {cap:,} tokens); "
            f"the others are kept in the output only")


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _class_shares(table: Table, shares: Optional[dict]) -> None:
    """The labels' shares beside the model's zero-shot reading and the EM estimate (class_shares.py)."""
    if not shares or not shares.get("labels"):
        return
    def line(d: dict) -> str:
        return ", ".join(f"{k} {v:.0%}" for k, v in d.items())
    zero = f"; zero-shot sample {line(shares['zero_shot'])}" if shares.get("zero_shot") else ""
    # A run whose shares had nothing to act on (class_shares.not_applied) has no estimate: its reason says why.
    if shares.get("stated"):
        reference, how = f"stated {line(shares['stated'])}", "matched" if shares["applied"] else shares["reason"]
    elif shares["estimated"]:
        reference, how = f"estimated {line(shares['estimated'])}", "applied" if shares["applied"] else "not applied"
    else:
        reference, how = "no estimate", shares["reason"]
    table.add_row("class shares", f"labels {line(shares['labels'])}{zero}; {reference} ({how})")
    for warning in shares.get("warnings", []):
        table.add_row("  warning", warning)


def print_summary(console: Console, summary: Any, out: Optional[Path]) -> None:
    table = Table(title="icm label: summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    s = summary
    table.add_row("model", f"{s.model} ({s.backend})")
    table.add_row("config hash / seed", f"{s.config_hash} / {s.seed}")
    table.add_row("method", s.method)
    fixed = f", {s.fixed_rows:,} by a person (--fixed)" if s.fixed_rows else ""
    table.add_row("rows", f"{s.rows:,}: {s.core_rows:,} labelled by {s.method} on {s.cores} core(s), "
                          f"{s.transfer_rows:,} by transfer{fixed}")
    if s.fixed_rows:
        disagreed = (f"; the search's reading would have labelled {s.fixed_disagreed:,} of those otherwise"
                     if s.fixed_disagreed is not None else "")
        table.add_row("fixed (human)", f"{s.fixed_demonstrations:,} of {s.fixed_rows:,} are demonstrations in each "
                                       f"core{disagreed}")
    if s.cores:
        table.add_row("iterations", f"{s.iterations} ({s.converged_cores}/{s.cores} cores converged)")
        table.add_row("acceptance rate", f"{s.accepted}/{s.proposals} = {s.acceptance_rate:.2%}")
        table.add_row("final U", ", ".join(f"{u:.3f}" for u in s.final_utility))
        table.add_row("inconsistencies left", str(s.inconsistencies_left))
    table.add_row("labels", ", ".join(f"{k}: {v}" for k, v in sorted(s.label_counts.items())))
    if s.core_choice:
        table.add_row("cores (auto)", s.core_choice)
    if s.zero_shot_rule:
        table.add_row("zero-shot reading", s.zero_shot_rule)
    if s.departure:
        table.add_row("departure", s.departure)
    if s.reading_weights:
        how = "confirmed departure: agreement with the others" if s.departure_confirmed is not False else \
            "the cores' departure unconfirmed: zero-shot alone"
        table.add_row("reading weights", ", ".join(f"{w:.2f}" for w in s.reading_weights)
                      + f" (each core's, then zero-shot's: {how})")
    _class_shares(table, s.class_shares)
    if s.mean_agreement is not None:
        table.add_row("core agreement (transfer)", f"{s.mean_agreement:.3f}")
    table.add_row("tokens scored", f"{s.tokens_scored:,} (of {s.tokens_requested:,} in prompts; {s.prefix_reuse:.1%} reused)")
    table.add_row("wall time", f"{s.wall_time_s:.1f} s (search {s.search_s:.1f} s, {s.tokens_search:,} tokens; "
                               f"transfer {s.transfer_s:.1f} s, {s.tokens_transfer:,} tokens)")
    signal = s.signal
    if signal is not None:
        table.add_row("signal check", f"[bold]{signal['verdict']}[/bold]: {signal['reason']} "
                                      f"({signal['rows']} rows, {signal['seconds']:.1f} s)")
        for f in signal["figures"]:
            interval = f" ({f['interval'][0]:.2f} to {f['interval'][1]:.2f})" if f.get("interval") else ""
            table.add_row(f"  {f['name']}", f"{f['value']:.3f}{interval}: {f['meaning']}")
        for warning in signal["warnings"]:
            table.add_row("  warning", warning)
    if out is not None and out.is_dir():
        table.add_row("written", f"{out}/part-*.jsonl and {out}/icm-summary.json")
    elif out is not None:
        table.add_row("written", f"{out} and {out.name}.summary.json")
    console.print(table)
