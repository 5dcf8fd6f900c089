"""Figures of the trust report, drawn with matplotlib's object API (no pyplot state) into PNG data URIs.

Readable without a legend hunt: every line carries its own label, colours are the Okabe-Ito
colour-blind-safe palette and lines also differ by dash pattern, fonts are large, axes say in words
what they measure. Matplotlib is imported inside the functions; it is not a core dependency.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

from clearmamba import evaluation as ev

# Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies
BLUE, ORANGE, GREEN, VERMILLION, PURPLE, SKY, YELLOW, BLACK = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#D55E00",
    "#CC79A7",
    "#56B4E9",
    "#F0E442",
    "#000000",
)
MODEL_COLOURS = [BLUE, VERMILLION, GREEN, PURPLE, ORANGE, SKY, BLACK]
DASHES = ["-", "--", "-.", ":"]
RIGHT_COLOUR, WRONG_COLOUR = BLUE, VERMILLION

STYLE = {
    "font.size": 14,
    "axes.titlesize": 15,
    "axes.titleweight": "bold",
    "axes.labelsize": 14,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "figure.dpi": 100,
}


def model_colour(i: int) -> str:
    return MODEL_COLOURS[i % len(MODEL_COLOURS)]


def model_dash(i: int) -> str:
    return DASHES[i % len(DASHES)]


def plain(text: str) -> str:
    """User text drawn literally: matplotlib would read ``$...$`` as maths and may fail on it."""
    return str(text).replace("\\", "\\\\").replace("$", r"\$")


def pct(x: float | None, digits: int = 0) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.{digits}f}%"


@contextmanager
def _figure(width: float, height: float):
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(width, height))
        FigureCanvasAgg(fig)
        yield fig


def to_data_uri(fig, dpi: int = 110) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _grid(fig, n: int, max_cols: int = 3):
    cols = min(n, max_cols)
    rows = -(-n // cols)
    return [fig.add_subplot(rows, cols, i + 1) for i in range(n)]


def _label_at(ax, x: np.ndarray, y: np.ndarray, at_x: float, text: str, colour: str, dy: float = 0.0) -> None:
    """Write ``text`` on the line itself, at the point nearest to ``at_x``."""
    i = int(np.argmin(np.abs(np.asarray(x) - at_x)))
    ax.annotate(
        plain(text),
        (x[i], y[i]),
        xytext=(6, 8 + dy),
        textcoords="offset points",
        color=colour,
        fontsize=13,
        fontweight="bold",
        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
    )


# ---- calibration -------------------------------------------------------------------------------------


def reliability_figure(panels: Sequence[tuple[str, Tensor, Tensor]], n_bins: int, cols: int = 3) -> str:
    """One reliability diagram per ``(title, probs, labels)``: stated confidence vs observed accuracy."""
    cols = max(1, min(cols, len(panels)))
    with _figure(4.6 * cols, 4.6 * -(-len(panels) // cols)) as fig:
        for ax, (title, probs, labels) in zip(_grid(fig, len(panels), cols), panels):
            bins = ev.reliability_bins(probs, labels, n_bins=n_bins)
            lower, upper = bins["lower"].numpy(), bins["upper"].numpy()
            acc, count = bins["accuracy"].numpy(), bins["count"].numpy()
            filled = count > 0
            # bars resting on fewer than 5 answers are drawn pale: their height is mostly chance
            colours = [SKY if c >= 5 else "#d6ecf8" for c in count[filled]]
            ax.bar(lower[filled], acc[filled], width=(upper - lower)[filled], align="edge", color=colours, ec=BLUE)
            ax.plot([0, 1], [0, 1], ls="--", color=BLACK, lw=1.5)
            # the dashed line's own label, just above it where low-confidence bars rarely are
            ax.text(0.09, 0.17, "honest", fontsize=12, rotation=45, ha="center", va="center", color=BLACK)
            for lo, hi, a, c in zip(lower[filled], upper[filled], acc[filled], count[filled]):
                ax.text((lo + hi) / 2, min(a, 0.93) + 0.02, f"{int(c)}", ha="center", fontsize=9, color="#444444")
            _percent_axes(ax, title, "how sure the model said it was", "how often it was right", ylim=(0, 1.02))
        fig.tight_layout()
        return to_data_uri(fig)


def _percent_axes(ax, title: str, xlabel: str, ylabel: str, xlim=(0, 1), ylim=None) -> None:
    """Title, axis labels and percent ticks on both axes."""
    ax.set(xlim=xlim, title=plain(title))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_formatter(_percent_formatter())
    ax.yaxis.set_major_formatter(_percent_formatter())


def _percent_formatter():
    from matplotlib.ticker import FuncFormatter

    # 3 significant digits: a tick at 72.5% must not read "73%"
    return FuncFormatter(lambda v, _: f"{100 * v:.3g}%")


# ---- right vs wrong ----------------------------------------------------------------------------------


def right_wrong_histogram_figure(panels: Sequence[tuple[str, str, Tensor, Tensor]]) -> str:
    """Per ``(title, score label, score, correct)``: how uncertain the model was on right vs wrong answers."""
    with _figure(5.2 * min(len(panels), 3), 4.0 * -(-len(panels) // 3)) as fig:
        for ax, (title, what, score, correct) in zip(_grid(fig, len(panels)), panels):
            s, ok = score.double().numpy(), correct.numpy().astype(bool)
            edges = np.histogram_bin_edges(s, bins=20)
            for mask, colour, name, y in ((ok, RIGHT_COLOUR, "right", 0.92), (~ok, WRONG_COLOUR, "wrong", 0.78)):
                if mask.sum() == 0:
                    continue
                # each group as a share of itself, so a small group of errors is still visible
                weights = np.full(mask.sum(), 1.0 / mask.sum())
                ax.hist(s[mask], bins=edges, weights=weights, color=colour, alpha=0.45, histtype="stepfilled")
                ax.hist(s[mask], bins=edges, weights=weights, color=colour, lw=2, histtype="step")
                median = float(np.median(s[mask]))
                ax.axvline(median, color=colour, ls="--", lw=1.5)
                ax.text(
                    0.98,
                    y,
                    f"{name} answers (n={int(mask.sum())})\nmedian {median:.2f}",
                    color=colour,
                    fontweight="bold",
                    fontsize=12,
                    ha="right",
                    va="top",
                    transform=ax.transAxes,
                )
            ax.set_title(plain(title))
            ax.set_xlabel(plain(f"uncertainty: {what}\n(higher = less sure)"))
            ax.set_ylabel("share of answers")
            ax.yaxis.set_major_formatter(_percent_formatter())
        fig.tight_layout()
        return to_data_uri(fig)


def wrong_confidence_figure(rows: Sequence[tuple[str, Tensor]], seed: int = 0) -> str:
    """Per model ``(name, confidence of its wrong answers)``: every wrong answer as a dot, median marked."""
    rng = np.random.default_rng(seed)
    with _figure(10, 1.0 + 1.1 * len(rows)) as fig:
        ax = fig.add_subplot(1, 1, 1)
        for i, (_, conf) in enumerate(rows):
            c = conf.double().numpy()
            y = len(rows) - 1 - i
            colour = model_colour(i)
            if c.size == 0:
                ax.text(0.5, y, "no wrong answers", ha="center", va="center", color=colour)
                continue
            ax.scatter(c, y + rng.uniform(-0.25, 0.25, c.size), s=14, color=colour, alpha=0.5, lw=0)
            median = float(np.median(c))
            ax.plot([median, median], [y - 0.38, y + 0.38], color=BLACK, lw=3)
            ax.text(median, y + 0.42, f"median {100 * median:.0f}% sure", ha="center", fontsize=13, fontweight="bold")
        ax.set_yticks(range(len(rows)), [plain(name) for name, _ in reversed(rows)])
        ax.set(xlim=(0, 1.0), ylim=(-0.6, len(rows) - 0.2))
        ax.set_xlabel("how sure the model was, on the cases it got WRONG")
        ax.xaxis.set_major_formatter(_percent_formatter())
        ax.grid(axis="y", visible=False)
        fig.tight_layout()
        return to_data_uri(fig)


# ---- referral (selective prediction) -----------------------------------------------------------------


def referral_curve(score: Tensor, correct: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(share referred, accuracy on the rest), referring the most uncertain first, at every k."""
    risk = ev.expected_selective_risk(score, correct).numpy()
    n = len(risk)
    kept = np.arange(1, n + 1)
    return 1 - kept / n, 1 - risk


def referral_figure(
    curves: Sequence[tuple[str, Tensor, Tensor]], title: str, fractions: Sequence[float], max_referred: float = 0.5
) -> str:
    """Accuracy on the cases the model keeps, against the share it refers to a doctor.

    Dots mark the operating points ``fractions``; with one model each dot carries its value (the table beside the
    figure has them all).
    """
    max_referred = min(1.0, max(max_referred, *(f + 0.1 for f in fractions))) if fractions else max_referred
    with _figure(10, 5.6) as fig:
        ax = fig.add_subplot(1, 1, 1)
        for i, (name, score, correct) in enumerate(curves):
            referred, accuracy = referral_curve(score, correct)
            shown = referred <= max_referred + 1e-9
            colour = model_colour(i)
            ax.plot(referred[shown], accuracy[shown], color=colour, ls=model_dash(i), lw=2.5)
            for f in fractions:
                j = int(np.argmin(np.abs(referred - f)))
                ax.plot(referred[j], accuracy[j], "o", color=colour, ms=7)
                if len(curves) == 1:  # with more curves the values crowd each other: the table below has them
                    ax.annotate(
                        f"{100 * accuracy[j]:.0f}%",
                        (referred[j], accuracy[j]),
                        xytext=(0, 10),
                        textcoords="offset points",
                        ha="center",
                        fontsize=11,
                        color=colour,
                        fontweight="bold",
                    )
            # names sit beyond the last operating point so they never cover its value
            last = max(fractions, default=0.0)
            _label_at(
                ax,
                referred[shown],
                accuracy[shown],
                last + (max_referred - last) * (0.3 + 0.35 * (i % 2)),
                name,
                colour,
            )
        for f in fractions:
            ax.axvline(f, color="#999999", lw=0.8, ls=":")
        _percent_axes(ax, title, "share of exams referred to a doctor (the model's least sure first)",
                      "accuracy on the exams the model keeps", xlim=(0, max_referred))
        fig.tight_layout()
        return to_data_uri(fig)


# ---- OOD ---------------------------------------------------------------------------------------------


def draw_ood_roc(fig, panels: Sequence[tuple[str, Sequence[tuple[str, Tensor, Tensor, float | None]]]]) -> list:
    """Draw the ROC panels into ``fig``; returns the axes. Each panel's AUROC values sit in one column in its
    empty lower-right corner (below the diagonal, where a better-than-chance curve never runs), one line per
    model in the model's colour, so they cannot overprint each other or a curve."""
    axes = _grid(fig, len(panels))
    for ax, (title, lines) in zip(axes, panels):
        ax.plot([0, 1], [0, 1], color="#999999", ls=":", lw=1.5)
        ax.text(0.70, 0.76, "coin toss", color="#777777", rotation=38, fontsize=11, ha="center", va="center")
        for i, (name, score_in, score_out, value) in enumerate(lines):
            score = torch.cat([score_in.double(), score_out.double()])
            is_ood = torch.cat([torch.zeros(len(score_in)), torch.ones(len(score_out))])
            roc = ev.roc_curve_points(score, is_ood)
            colour = model_colour(i)
            ax.plot(roc["fpr"].numpy(), roc["tpr"].numpy(), color=colour, ls=model_dash(i), lw=2.5)
            label = plain(f"{name}: AUROC {value:.2f}" if value is not None else name)
            ax.text(0.97, 0.04 + 0.085 * (len(lines) - 1 - i), label, transform=ax.transAxes, ha="right",
                    va="bottom", fontsize=11, fontweight="bold", color=colour,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.9})  # fmt: skip
        _percent_axes(ax, title, "normal exams wrongly flagged", "unfamiliar images caught", ylim=(0, 1.02))
    fig.tight_layout()
    return axes


def ood_roc_figure(panels: Sequence[tuple[str, Sequence[tuple[str, Tensor, Tensor, float | None]]]]) -> str:
    """Per OOD set ``(title, [(model, score_in, score_out, auroc)])``: ROC of flagging the OOD images."""
    with _figure(5.6 * min(len(panels), 3), 5.2 * -(-len(panels) // 3)) as fig:
        draw_ood_roc(fig, panels)
        return to_data_uri(fig)


# ---- gallery -----------------------------------------------------------------------------------------


def _to_display(frame: np.ndarray) -> np.ndarray:
    """``[c, h, w]`` -> grey ``[h, w]`` or RGB ``[h, w, 3]``."""
    if frame.shape[0] == 3:
        return frame.transpose(1, 2, 0)
    return frame.mean(0)


def _time_label(seconds: float) -> str:
    # 75 -> "1:15", 9.5 -> "9.5 s": angiography phases are read in seconds after injection
    if seconds >= 60:
        return f"{int(seconds // 60)}:{int(round(seconds % 60)):02d}"
    return f"{seconds:g} s"


def film_strip(
    frames: Tensor, times: Sequence[float] | None = None, max_frames: int = 8, height: float = 1.6
) -> str:
    """Frames ``[t, c, h, w]`` of one exam side by side, evenly subsampled to ``max_frames``, each titled with
    its time after injection (``times``, seconds) or, without times, its position ("frame 3/12, no time")."""
    if not isinstance(frames, torch.Tensor):
        raise TypeError(f"expected frames as a tensor [t, c, h, w], got {type(frames).__name__}")
    x = frames.detach().cpu().float()
    if x.ndim == 3:  # [t, h, w]
        x = x[:, None]
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"gallery frames: expected a tensor [t, c, h, w] with t >= 1, got shape {tuple(x.shape)}")
    t = x.shape[0]
    if times is not None and len(times) != t:
        raise ValueError(f"gallery times: expected {t} frame times (one per frame), got {len(times)}")
    keep = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    x = x[keep].numpy()
    lo, hi = np.nanmin(x), np.nanmax(x)
    x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)  # one window for the whole exam
    with _figure(height * len(keep), height + 0.3) as fig:
        for j, (index, frame) in enumerate(zip(keep, x)):
            ax = fig.add_subplot(1, len(keep), j + 1)
            ax.imshow(_to_display(frame), cmap="gray", vmin=0, vmax=1)
            title = _time_label(float(times[index])) if times is not None else f"frame {index + 1}/{t}, no time"
            ax.set_title(title, fontsize=10, fontweight="normal")
            ax.axis("off")
        fig.subplots_adjust(wspace=0.04, left=0.01, right=0.99, top=0.85, bottom=0.01)
        return to_data_uri(fig, dpi=80)
