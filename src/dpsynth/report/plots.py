"""Small inline-SVG charts for the HTML report (matplotlib, Agg-free: a bare ``Figure`` saved as SVG).

Each function returns an ``<svg ...>...</svg>`` string ready to embed in HTML: no XML prolog, no
DOCTYPE, no metadata, no external reference, text kept as ``<text>`` (``svg.fonttype = none``),
element ids prefixed with the chart's name so several charts can share one page.  matplotlib is in the ``eval``
extra: without it every function returns a one-line note in place of its chart (:func:`omitted`), and
the report shows the tables and those notes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dpsynth.report.markup import esc, safe_text

_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def omitted(title: str) -> str:
    """What stands where a chart would be when matplotlib is not installed."""
    return (
        f'<p class="note">Chart omitted ({esc(title)}): matplotlib is not installed; '
        "<code>pip install 'dpsynth[eval]'</code> adds the charts.</p>"
    )


def _label(s: object) -> str:
    """Plain text for matplotlib: '$' would start mathtext; a lone surrogate (``safe_text``) cannot be written."""
    return safe_text(str(s)).replace("$", r"\$")


def _legend(name: object) -> str:
    """A series name for the legend: matplotlib leaves out every label that starts with "_" (its mark for
    "no legend entry"), so a generator or class named "_pos" vanished from it; a zero-width space before
    the name keeps it, and shows nothing."""
    text = _label(name)
    return "\u200b" + text if text.startswith("_") else text


def _svg(fig: Any, salt: str, title: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    s = buf.getvalue()
    s = re.sub(r"<\?xml[^>]*\?>\s*", "", s)
    s = re.sub(r"<!DOCTYPE[^>]*>\s*", "", s)
    s = re.sub(r"<metadata>.*?</metadata>\s*", "", s, flags=re.S)
    s = s[s.index("<svg") :]
    # matplotlib names the parts of every figure alike (figure_1, axes_1, ...; svg.hashsalt changes only its
    # hashed ids): prefix them all with the chart's salt, so that several charts give one page unique ids
    ids = set(re.findall(r'\sid="([^"]+)"', s))
    prefix = "chart-" + re.sub(r"[^A-Za-z0-9_-]", "-", salt) + "-"
    s = re.sub(r'(\sid=")([^"]+)"', lambda m: f'{m.group(1)}{prefix}{m.group(2)}"', s)
    s = re.sub(
        r'(url\(#|href="#)([^")]+)', lambda m: m.group(1) + (prefix if m.group(2) in ids else "") + m.group(2), s
    )

    def root(m: re.Match[str]) -> str:
        tag = re.sub(r'\s(width|height)="[^"]*"', "", m.group(0))
        return tag[:-1] + f' role="img" aria-label="{esc(title)}" class="chart" data-chart="{esc(salt)}">'

    return re.sub(r"<svg\b[^>]*>", root, s, count=1)


def _figure(width: float = 6.4, height: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig


def _render(salt: str, title: str, draw: Callable[[Any], None], width: float = 6.4, height: float = 3.2) -> str | None:
    if not available():
        return omitted(title)
    import matplotlib

    with matplotlib.rc_context(
        {"svg.fonttype": "none", "svg.hashsalt": f"dpsynth-{salt}", "font.size": 9, "axes.titlesize": 10}
    ):
        fig = _figure(width, height)
        ax = fig.subplots()
        draw(ax)
        ax.set_title(_label(title))
        ax.spines[["top", "right"]].set_visible(False)
        return _svg(fig, salt, title)


def line_chart(
    salt: str,
    title: str,
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    xlabel: str = "round",
    ylabel: str = "",
    integer_x: bool = True,
    ylim: tuple[float, float] | None = None,
) -> str | None:
    """One line with markers per series; None values are gaps."""

    def draw(ax: Any) -> None:
        for i, (name, ys) in enumerate(series.items()):
            vals = [float("nan") if v is None else float(v) for v in ys]
            ax.plot(x, vals, marker="o", color=_COLORS[i % len(_COLORS)], label=_legend(name))
        ax.set_xlabel(_label(xlabel))
        ax.set_ylabel(_label(ylabel))
        if integer_x:
            ax.set_xticks(list(x))
        if ylim is not None:
            ax.set_ylim(*ylim)
        if len(series) > 1:
            ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(alpha=0.3)

    return _render(salt, title, draw)


def bar_chart(
    salt: str,
    title: str,
    categories: Sequence[str],
    series: Mapping[str, Sequence[float]],
    xlabel: str = "",
    ylabel: str = "",
    stacked: bool = False,
) -> str | None:
    """Grouped (or stacked) bars: one group per category, one bar per series."""
    import numpy as np

    def draw(ax: Any) -> None:
        n = max(1, len(series))
        pos = np.arange(len(categories))
        width = 0.8 if stacked else 0.8 / n
        bottom = np.zeros(len(categories))
        for i, (name, ys) in enumerate(series.items()):
            vals = np.array([float(v) for v in ys])
            color = _COLORS[i % len(_COLORS)]
            if stacked:
                ax.bar(pos, vals, width, bottom=bottom, color=color, label=_legend(name))
                bottom = bottom + vals
            else:
                off = (i - (n - 1) / 2) * width
                ax.bar(pos + off, vals, width, color=color, label=_legend(name))
        ax.set_xticks(pos, [_label(c) for c in categories])
        ax.set_xlabel(_label(xlabel))
        ax.set_ylabel(_label(ylabel))
        if len(series) > 1:
            ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.grid(axis="y", alpha=0.3)

    return _render(salt, title, draw)


def image_grid(salt: str, title: str, images: Any, labels: Any | None = None, columns: int = 10) -> str | None:
    """A grid of small grayscale images (e.g. PEARL's synthetic digits) as inline SVG."""
    if not available():
        return omitted(title)
    import matplotlib
    import numpy as np

    images = np.asarray(images, dtype=float)
    n = len(images)
    if n == 0 or images.ndim != 3:
        return None
    rows = (n + columns - 1) // columns
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"dpsynth-{salt}", "font.size": 7}):
        fig = _figure(columns * 0.7, rows * 0.8 + 0.3)
        axes = fig.subplots(rows, columns, squeeze=False)
        for i, ax in enumerate(axes.ravel()):
            ax.axis("off")
            if i < n:
                ax.imshow(images[i], cmap="gray_r", interpolation="nearest")
                if labels is not None:
                    ax.set_title(_label(labels[i]), fontsize=7)
        fig.suptitle(_label(title), fontsize=9)
        return _svg(fig, salt, title)
