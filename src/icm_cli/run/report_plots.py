"""The report's plots, drawn by matplotlib and returned as inline SVG text (one `<svg>` element
each, no XML header, no metadata, no links: the page needs nothing from outside).

Text stays text in the SVG (`svg.fonttype: none`): smaller than outlined glyphs, selectable, and
drawn in the browser's own sans-serif. Each figure's ids carry its name, so the ids of several
figures on one page never collide.
"""

from __future__ import annotations

import io
import math
import re
import functools
from typing import Any, Callable, Sequence

from ..foundation.errors import InputError
from ..foundation.metrics import Agreement, ConfidenceRow
from .report_data import ReliabilityBin, ReportRow
from ..algorithm.search import argmax
from ..algorithm.search_trace import CoreTrace
from .signal_check import AGREEMENT, CONTENT, NO_CONTENT, ONE_LABEL, Figure, ReadingSample

# Inches. Plots are drawn at the size the page shows them (a full column, or half of one), so
# their text reads at the page's own size; a narrower window scales them down.
FULL, HALF = 9.4, 4.7
COLOURS = ("#3b6ea8", "#d9822b", "#4f9a5b", "#b0413e", "#7b5ea7", "#8c6d46", "#c15ca5", "#6b6b6b")
GOOD, BAD, NEUTRAL = "#4f9a5b", "#b0413e", "#9aa5b1"


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend; a one-line error when it is missing."""
    try:
        import matplotlib
    except ImportError:
        raise InputError("the report's plots need matplotlib, which is not installed: "
                         "pip install 'icm-cli[report]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.titleweight": "bold", "axes.labelsize": 10, "legend.fontsize": 9,
         "font.family": "sans-serif", "svg.fonttype": "none", "axes.spines.top": False,
         "axes.spines.right": False, "axes.grid": True, "grid.color": "#e6e9ed", "grid.linewidth": 0.6,
         "axes.axisbelow": True, "axes.titlelocation": "left"}


def _plot(salt: str) -> Callable[[Callable[..., Any]], Callable[..., str]]:
    """A function that draws one figure and returns it, as one that returns its SVG text: drawn
    in the report's style, its ids salted with `salt`."""

    def wrap(draw: Callable[..., Any]) -> Callable[..., str]:
        @functools.wraps(draw)
        def svg(*args: Any, **kwargs: Any) -> str:
            plt = pyplot()
            with plt.rc_context({**STYLE, "svg.hashsalt": salt}):
                fig = draw(*args, **kwargs)
                fig.tight_layout()
                out = io.StringIO()
                fig.savefig(out, format="svg", bbox_inches="tight",
                            metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
            plt.close(fig)
            text = out.getvalue()
            return _own_ids(text[text.index("<svg"):].strip(), salt)

        return svg

    return wrap


def _own_ids(svg: str, prefix: str) -> str:
    """Every id the SVG defines, and every reference to one, prefixed: matplotlib numbers its
    groups alike in every figure (figure_1, axes_1, ...), and one page holds several figures,
    whose ids must not repeat."""
    svg = re.sub(r'\bid="', f'id="{prefix}-', svg)
    svg = svg.replace("url(#", f"url(#{prefix}-")
    return re.sub(r'href="#', f'href="#{prefix}-', svg)


def _figure(rows: int = 1, cols: int = 1, height: float = 3.0, width: float = FULL, **kw: Any) -> tuple[Any, Any]:
    return pyplot().subplots(rows, cols, figsize=(width, height), squeeze=False, **kw)


def _legend_above(ax: Any, **kw: Any) -> None:
    """The legend above the plot, at its right (the title is at its left): never over the data."""
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False, ncol=kw.pop("ncol", 3),
              borderaxespad=0.2, **kw)


# ---- the signal check


@_plot("verdict")
def verdict_figures(figures: Sequence[Figure]) -> Any:
    """Each figure as a point with its interval, on the scale where its thresholds are drawn."""
    by_name = {f.name: f for f in figures}
    panels = [(name, title) for name, title in (
        ("content_ratio", "content ratio: readings' spread on the rows / on their shuffled letters"),
        ("zero_shot_kappa", "zero-shot kappa: many-shot labels against the model's zero-shot labels"),
        ("majority_share", "share of the commonest label"),
    ) if name in by_name]
    fig, axes = _figure(len(panels), 1, 1.05 * len(panels) + 0.3)
    for ax, (name, title) in zip(axes[:, 0], panels):
        f = by_name[name]
        ax.set_title(title, loc="left")
        ax.set_yticks([])
        ax.grid(False, axis="y")
        top = 1.0
        if name == "content_ratio":
            finite = [v for v in (f.value, *(f.interval or ())) if math.isfinite(v)]
            top = max(3.5, max(finite, default=0.0) * 1.1)
            _zones(ax, [(0, NO_CONTENT, BAD, "none"), (NO_CONTENT, CONTENT, "#e0b341", "weak"),
                        (CONTENT, top, GOOD, "signal")])
            ax.set_xlim(0, top)
        elif name == "zero_shot_kappa":
            _zones(ax, [(-1, AGREEMENT, "#e0b341", "weak"), (AGREEMENT, 1, GOOD, "signal")])
            ax.set_xlim(-1, 1)
        else:
            _zones(ax, [(0, ONE_LABEL, GOOD, ""), (ONE_LABEL, 1, BAD, "one label")])
            ax.set_xlim(0, 1)
            other = by_name.get("zero_shot_majority_share")
            if other is not None:
                _point(ax, other, 1.0, y=-0.28, marker="s", colour=NEUTRAL, label="zero-shot labels")
        _point(ax, f, top, y=0.1 if name == "majority_share" else 0.0)
        ax.set_ylim(-0.6, 0.6)
        if name == "majority_share" and "zero_shot_majority_share" in by_name:
            _legend_above(ax)
    return fig


def _zones(ax: Any, zones: Sequence[tuple[float, float, str, str]]) -> None:
    for low, high, colour, name in zones:
        ax.axvspan(low, high, color=colour, alpha=0.12, linewidth=0)
        if name:
            ax.text((low + high) / 2, 0.42, name, ha="center", va="center", fontsize=9, color=colour)


def _point(ax: Any, f: Figure, top: float, y: float = 0.0, marker: str = "o", colour: str = "#1f2933",
           label: str = "run's labels") -> None:
    """The figure's value, and its interval where it has one, labelled beside it; a value past the
    axis (an infinite ratio: the shuffled rows did not vary at all) sits at its edge, said so."""
    value = min(f.value, top)
    if f.interval is not None:
        low, high = (min(v, top) for v in f.interval)
        bars = ax.errorbar([value], [y], xerr=[[value - low], [high - value]], fmt=marker, color=colour,
                           capsize=4, markersize=6, label="run (95% interval)")
        for artist in (*bars.lines[:1], *bars.lines[1], *bars.lines[2]):
            artist.set_clip_on(False)
    else:
        ax.plot([value], [y], marker, color=colour, markersize=6, label=label, clip_on=False)
    text = f"{f.value:.2f}" if math.isfinite(f.value) else "infinite"
    if f.value > top:
        text += " (off the scale)"
    left = ax.get_xlim()[0]
    right = value > left + 0.8 * (top - left)  # near the right edge: the label goes to the left
    if f.interval is not None:  # beside the point it would sit on the interval's bar: below it
        ax.annotate(text, (value, y), xytext=(0, -8), textcoords="offset points", ha="right" if right else "center",
                    va="top", fontsize=9)
    else:
        ax.annotate(text, (value, y), xytext=(-9 if right else 9, 0), textcoords="offset points",
                    ha="right" if right else "left", va="center", fontsize=9)


@_plot("spread")
def content_spread(sample: ReadingSample) -> Any:
    """The readings' log-odds on the rows and on their letters shuffled: what the content ratio
    compares (a wider spread on the rows: the words move the readings)."""
    fig, axes = _figure(1, 1, 2.5)
    ax = axes[0, 0]
    words = _logodds(sample.many_shot)
    mixed = [v for scrambles in (sample.scrambled, *sample.more_scrambled) for v in _logodds(scrambles)]
    bins = _bins(words + mixed, 24)
    ax.hist(words, bins=bins, color=COLOURS[0], alpha=0.75, label="the rows")
    # A small sample's rows are each shuffled several times: weighted so both count rows.
    share = len(words) / len(mixed)
    ax.hist(mixed, bins=bins, weights=[share] * len(mixed), color=COLOURS[1], alpha=0.6, label="their letters shuffled")
    judged = "zero-shot" if sample.zero_shot_alone else "many-shot"
    ax.set_xlabel(f"{judged} log-odds of '{sample.label_words[0]}'")
    ax.set_ylabel("sampled rows")
    _legend_above(ax)
    return fig


def _logodds(readings: Sequence[Sequence[float]]) -> list[float]:
    return [math.log(max(r[0], 1e-9)) - math.log(max(max(r[1:]), 1e-9)) for r in readings]


def _bins(values: Sequence[float], count: int) -> list[float]:
    low, high = min(values), max(values)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    return [low + (high - low) * k / count for k in range(count + 1)]


@_plot("readings")
def readings_scatter(sample: ReadingSample) -> Any:
    """Each sampled row's probability of the first label, many-shot against zero-shot."""
    fig, axes = _figure(1, 1, 4.4, HALF)
    ax = axes[0, 0]
    word = sample.label_words[0]
    many = [r[0] for r in sample.many_shot]
    zero = [r[0] for r in sample.zero_shot]
    agree = [argmax(a) == argmax(b) for a, b in zip(sample.many_shot, sample.zero_shot)]
    for flag, colour, name in ((True, COLOURS[0], "same label"), (False, BAD, "different labels")):
        xs = [z for z, g in zip(zero, agree) if g is flag]
        ys = [m for m, g in zip(many, agree) if g is flag]
        if xs:
            ax.scatter(xs, ys, s=14, color=colour, alpha=0.75, label=f"{name} ({len(xs)})", linewidths=0)
    ax.plot([0, 1], [0, 1], color="#cbd2d9", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(f"zero-shot P({word})")
    ax.set_ylabel(f"many-shot P({word})")
    _legend_above(ax, ncol=1)
    return fig


# ---- the labels


@_plot("confidence")
def confidence_histograms(rows: Sequence[ReportRow], labels: Sequence[str]) -> Any:
    """One histogram per label, its core and transfer rows stacked."""
    shown = [w for w in labels if any(r.label == w for r in rows)]
    cols = min(3, len(shown))
    lines = math.ceil(len(shown) / cols)
    fig, axes = _figure(lines, cols, 2.2 * lines + 0.2, sharex=True)
    low = min(1.0 / max(2, len(labels)), min(r.confidence for r in rows))
    bins = [low + (1 - low) * k / 20 for k in range(21)]
    sources = sorted({r.source or "unknown" for r in rows})
    for k, ax in enumerate(axes.flat):
        if k >= len(shown):
            ax.set_visible(False)
            continue
        mine = [r for r in rows if r.label == shown[k]]
        parts = [[r.confidence for r in mine if (r.source or "unknown") == s] for s in sources]
        ax.hist(parts, bins=bins, stacked=True, color=list(COLOURS[: len(sources)]), label=sources)
        ax.set_title(f"{shown[k]} ({len(mine):,} rows)", loc="left")
        ax.set_xlabel("confidence")
        if k % cols == 0:
            ax.set_ylabel("rows")
    _legend_above(axes.flat[len(shown) - 1], ncol=len(sources))
    return fig


# ---- the search


@_plot("trace")
def search_trace(traces: Sequence[CoreTrace], constrained: bool) -> Any:
    """U, inconsistencies (where the task has constraints) and the share of proposals accepted,
    over the iterations, per core."""
    fig, axes = _figure(3 if constrained else 2, 1, 5.2 if constrained else 3.8, sharex=True)
    panels = list(axes[:, 0])
    u, accepted = panels[0], panels[-1]
    for t in traces:
        colour = COLOURS[t.core % len(COLOURS)]
        u.plot(t.iteration, t.utility, color=colour, linewidth=1.4, label=f"core {t.core + 1}")
        if constrained:
            panels[1].step(t.iteration, t.inconsistent, where="post", color=colour, linewidth=1.4)
        xs, rates = _acceptance(t)
        accepted.plot(xs, rates, color=colour, linewidth=1.4, marker="o", markersize=3)
    u.set_ylabel("U = alpha*P - I")
    if constrained:
        panels[1].set_ylabel("inconsistencies")
    accepted.set_ylabel("share accepted")
    accepted.set_ylim(-0.05, 1.05)
    accepted.set_xlabel("iteration")
    if len(traces) > 1:
        _legend_above(u, ncol=min(4, len(traces)))
    return fig


def _acceptance(t: CoreTrace) -> tuple[list[float], list[float]]:
    """The share of proposals accepted over windows of about a tenth of the search (running
    totals, so exact between any two kept points)."""
    n = len(t.iteration)
    step = max(1, n // 10)
    xs, rates = [], []
    for k in range(step, n, step):
        proposed = t.proposals[k] - t.proposals[k - step]
        if proposed > 0:
            xs.append(t.iteration[k])
            rates.append((t.accepted[k] - t.accepted[k - step]) / proposed)
    return xs, rates


# ---- against gold


@_plot("confusion")
def confusion_heatmap(agreement: Agreement) -> Any:
    """Rows: gold labels; columns: icm's; each cell's count written in it (so no colour bar, whose
    gradient matplotlib would embed as a bitmap). Cells are vector patches (pcolormesh), not an image."""
    labels = agreement.labels
    k = len(labels)
    size = min(HALF, max(3.0, 0.55 * k + 1.6))
    fig, ax = pyplot().subplots(figsize=(size + 0.4, size))
    ax.grid(False)
    counts = [[agreement.confusion[g][p] for p in labels] for g in labels]
    ax.pcolormesh(counts, cmap="Blues", vmin=0, edgecolors="white", linewidth=1)
    top = max(max(row) for row in counts) or 1
    for i, row in enumerate(counts):
        for j, c in enumerate(row):
            ax.text(j + 0.5, i + 0.5, f"{c:,}", ha="center", va="center",
                    color="white" if c > top * 0.6 else "#1f2933")
    tilt = {"rotation": 30, "ha": "right"} if k > 3 else {}
    ax.set_xticks([j + 0.5 for j in range(k)], labels, **tilt)
    ax.set_yticks([i + 0.5 for i in range(k)], labels)
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.spines[["left", "bottom"]].set_visible(False)
    ax.tick_params(length=0)
    ax.set_xlabel("icm's label")
    ax.set_ylabel("gold label")
    return fig


@_plot("reliability")
def reliability(bins: Sequence[ReliabilityBin], chance: float) -> Any:
    """Accuracy against confidence, per confidence bin, with each bin's 95% interval; on the
    diagonal a label's confidence is the chance it is right."""
    fig, axes = _figure(1, 1, 3.6, HALF)
    ax = axes[0, 0]
    ax.plot([chance, 1], [chance, 1], color="#cbd2d9", linewidth=1, label="calibrated")
    shown = [b for b in bins if b.part.accuracy is not None and b.part.ci95 is not None]
    xs = [b.mean_confidence for b in shown]
    ys = [b.part.accuracy for b in shown]
    errors = [[y - b.part.ci95[0] for y, b in zip(ys, shown)], [b.part.ci95[1] - y for y, b in zip(ys, shown)]]
    ax.errorbar(xs, ys, yerr=errors, fmt="o-", color=COLOURS[0], capsize=3, markersize=5, label="icm labels")
    for x, y, b in zip(xs, ys, shown):
        ax.annotate(f"{b.part.n:,}", (x, y), xytext=(5, -11), textcoords="offset points", fontsize=7, color="#52606d")
    ax.set_xlim(chance - 0.02, 1.01)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (bin mean; beside each: its rows)")
    ax.set_ylabel("accuracy against gold")
    _legend_above(ax, ncol=2)
    return fig


@_plot("coverage")
def coverage_curve(rows: Sequence[ConfidenceRow], overall: float) -> Any:
    """Accuracy of the rows kept against the share kept, as the confidence cut-off rises."""
    fig, axes = _figure(1, 1, 3.6, HALF)
    ax = axes[0, 0]
    kept = [r for r in rows if r.kept.accuracy is not None and r.kept.ci95 is not None]
    xs = [r.coverage for r in kept]
    ax.fill_between(xs, [r.kept.ci95[0] for r in kept], [r.kept.ci95[1] for r in kept], color=COLOURS[0],
                    alpha=0.15, linewidth=0, label="95% interval", step="post")
    ax.step(xs, [r.kept.accuracy for r in kept], where="post", color=COLOURS[0], linewidth=1.5,
            label="rows kept")
    ax.axhline(overall, color="#9aa5b1", linewidth=1, linestyle="--", label="all rows")
    ax.set_xlim(1.01, 0)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("share of rows kept (cut-off rising to the right)")
    ax.set_ylabel("accuracy of the rows kept")
    _legend_above(ax, ncol=2)
    return fig
