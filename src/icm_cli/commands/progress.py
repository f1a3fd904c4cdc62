"""The live report on stderr: a rich view on a terminal, plain periodic lines otherwise, or nothing."""

from __future__ import annotations

import time
from typing import Optional

from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..run.runner import Progress


def _fmt_eta(seconds: Optional[float]) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _fields(p: Progress, words: tuple[str, ...]) -> list[tuple[str, str]]:
    rate = p.tokens_computed / p.elapsed if p.elapsed > 0 else 0.0
    out = [("phase", p.phase)]
    s = p.step
    if p.phase == "search" and s is not None:
        counts = " ".join(f"{w}={c}" for w, c in zip(words, s.label_counts))
        accepted = s.accepted / s.proposals if s.proposals else 0.0
        out += [
            ("core", f"{p.core + 1}/{p.cores}"),
            ("iteration", f"{s.iteration}/{s.iterations}"),
            ("temperature", f"{s.temperature:.3f}"),
            ("U", f"{s.utility:.3f}"),
            ("inconsistent", str(s.inconsistent)),
            ("accepted", f"{s.accepted}/{s.proposals} ({accepted:.0%})"),
            ("labelled", f"{s.labelled}/{s.n}"),
            ("labels", counts),
        ]
    else:
        per_s = p.transferred / p.phase_elapsed if p.phase_elapsed > 0 else 0.0
        out += [("transferred", f"{p.transferred:,}/{p.to_transfer:,}"), ("rows/s", f"{per_s:,.1f}")]
    out += [
        ("rows done", f"{p.rows_done:,}/{p.rows:,}"),
        ("tokens/s", f"{rate:,.0f}" if p.elapsed > 0 and p.tokens_computed else "-"),
        ("ETA", _fmt_eta(p.eta)),
    ]
    if p.monitor_agreement is not None:
        out.append(("gold agreement (monitor only)", f"{p.monitor_agreement:.3f}"))
    return out


class ProgressView:
    """Callable progress sink; use as a context manager so the live view is closed."""

    def __init__(self, console: Console, words: tuple[str, ...], quiet: bool = False, every: float = 10.0):
        self.console = console
        self.words = words
        self.quiet = quiet
        self.every = every
        self.live: Optional[Live] = None
        self._last_line = 0.0
        self._last: Optional[Progress] = None

    def __enter__(self) -> "ProgressView":
        if not self.quiet and self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
        elif self._last is not None and not self.quiet:
            self._line(self._last)

    def __call__(self, p: Progress) -> None:
        self._last = p
        if self.quiet:
            return
        if self.live is not None:
            self.live.update(self._table(p))
            return
        now = time.monotonic()
        if now - self._last_line >= self.every:
            self._last_line = now
            self._line(p)

    def _table(self, p: Progress) -> Table:
        title = ("icm: searching the core for the most coherent labels" if p.phase == "search"
                 else "icm: labelling the other rows with the core's labels as context")
        table = Table(title=title, show_header=False, box=None)
        table.add_column(style="bold cyan")
        table.add_column()
        for name, value in _fields(p, self.words):
            table.add_row(name, value)
        return table

    def _line(self, p: Progress) -> None:
        text = "  ".join(f"{k}={v}" for k, v in _fields(p, self.words))
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)
