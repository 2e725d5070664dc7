"""Figures of the report, each returned as PNG bytes (matplotlib, Agg backend)."""

from __future__ import annotations

import io

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

REAL, FAKE = "#1f77b4", "#d62728"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def image_grid(
    images: np.ndarray,
    title: str,
    units: str,
    lo: float,
    hi: float,
    ncols: int = 8,
    cmap: str = "RdBu_r",
) -> bytes:
    """First channel of up to 32 images on a shared colour scale (physical units); ``cmap``
    grey for SAR backscatter, as radar images are shown."""
    x = images[:32, 0]
    n = x.shape[0]
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.3 * nrows + 0.4), squeeze=False)
    im = None
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < n:
            im = ax.imshow(np.ma.masked_invalid(x[k]), cmap=cmap, vmin=lo, vmax=hi)
    fig.suptitle(title)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.8, label=units)
    return _png(fig)


def loss_curves(rows: list[dict]) -> bytes:
    train = [r for r in rows if "loss" in r]
    val = [r for r in rows if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    if train:
        steps = [r["step"] for r in train]
        ax.plot(steps, [r["loss"] for r in train], color="k", label="train loss")
        for q, alpha in zip(range(4), (0.9, 0.7, 0.5, 0.3), strict=True):
            vals = [r.get(f"loss_q{q}") for r in train]
            if any(v is not None for v in vals):
                ax.plot(
                    steps,
                    [np.nan if v is None else v for v in vals],
                    lw=0.8,
                    alpha=alpha,
                    label=f"t quartile {q + 1}",
                )
    if val:
        ax.plot(
            [r["step"] for r in val],
            [r["val_loss"] for r in val],
            "o-",
            color=FAKE,
            label="val (EMA)",
        )
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend(fontsize=7)
    return _png(fig)


def log_ticks(x) -> list[float]:
    """The 1-2-5 values (..., 0.05, 0.1, 0.2, ...) within the positive finite range of ``x``."""
    xs = np.asarray(x, dtype=float)
    xs = xs[np.isfinite(xs) & (xs > 0)]
    if not xs.size:
        return []
    nice = [m * 10.0**e for e in range(-6, 7) for m in (1, 2, 5)]
    return [v for v in nice if xs.min() * (1 - 1e-9) <= v <= xs.max() * (1 + 1e-9)]


def band_plot(
    x,
    real: dict,
    fake: dict,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
) -> bytes:
    """Mean curves of the real and generated sets with their bands (as given in metrics.json)."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for d, color, label in ((real, REAL, "real"), (fake, FAKE, "generated")):
        ax.plot(x, d["mean"], color=color, label=label)
        if d.get("low") is not None and d.get("high") is not None:
            ax.fill_between(x, d["low"], d["high"], color=color, alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logx:
        ax.set_xscale("log")
        # a PSD's axis spans about one decade: matplotlib labels its minor ticks (2x10^-1,
        # 3x10^-1...) and they overlapped; plain 1-2-5 ticks instead
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ticks = log_ticks(x)
        if len(ticks) >= 2:
            ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    if logy:
        ax.set_yscale("log")
    ax.legend()
    return _png(fig)


def histogram_plot(edges, real, fake, units: str, title: str = "pixel values") -> bytes:
    edges = np.asarray(edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.step(centres, real, where="mid", color=REAL, label="real")
    ax.step(centres, fake, where="mid", color=FAKE, label="generated")
    ax.set_xlabel(units or "value")
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend()
    return _png(fig)


def distribution_plot(real, fake, xlabel: str, title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.histogram_bin_edges(np.concatenate([np.asarray(real), np.asarray(fake)]), bins=30)
    ax.hist(real, bins=bins, density=True, alpha=0.5, color=REAL, label="real")
    ax.hist(fake, bins=bins, density=True, alpha=0.5, color=FAKE, label="generated")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend()
    return _png(fig)


def texture_diagram(k2_real, k3_real, k2_fake, k3_fake) -> bytes:
    """Per-tile Mellin log-cumulants (k3, k2) of both sets over the curve of fully developed
    L-look speckle, (psi''(L), psi'(L)): texture lies above it (Tison et al. 2004)."""
    from scipy import special

    looks = np.geomspace(0.7, 60, 200)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(special.polygamma(2, looks), special.polygamma(1, looks), color="0.4", lw=1,
            label="Gamma speckle, L looks")  # fmt: skip
    ax.scatter(k3_real, k2_real, s=6, alpha=0.5, color=REAL, label="real")
    ax.scatter(k3_fake, k2_fake, s=6, alpha=0.5, color=FAKE, label="generated")
    finite = np.concatenate([np.asarray(v, float) for v in (k3_real, k3_fake)])
    finite = finite[np.isfinite(finite)]
    if finite.size:
        ax.set_xlim(min(finite.min(), -0.1) * 1.1, max(finite.max(), 0.0) + 0.1)
    k2 = np.concatenate([np.asarray(v, float) for v in (k2_real, k2_fake)])
    k2 = k2[np.isfinite(k2)]
    if k2.size:
        ax.set_ylim(0, k2.max() * 1.1)
    ax.set_xlabel("k3 (third log-cumulant)")
    ax.set_ylabel("k2 (second log-cumulant)")
    ax.set_title("texture diagram (channel 0)")
    ax.legend(fontsize=8)
    return _png(fig)


def study_plot(
    rows: list[dict], metric: str, reference: float | None = None, logy: bool = False
) -> bytes:
    """``metric`` against sampling steps, one line per sampler (the sampler study).

    ``reference`` (a horizontal line) is what training images score against the same real set:
    the floor a perfect sampler would reach with as many samples.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name in sorted({r["sampler"] for r in rows}):
        sel = sorted(
            (r for r in rows if r["sampler"] == name and r.get(metric) is not None),
            key=lambda r: r["steps"],
        )
        if sel:
            ax.plot([r["steps"] for r in sel], [r[metric] for r in sel], "o-", label=name)
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label="training data (floor)")
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("sampling steps")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    return _png(fig)


CURVE_STYLE = {"physics": ("#7f7f7f", ":"), "generated": (FAKE, "--"), "real": (REAL, "-"),
               "real+generated": ("#2ca02c", "-")}  # fmt: skip
KNOB_COLORS = ("#9467bd", "#bcbd22", "#17becf", "#ff7f0e", "#8c564b")


def curve_plot(curve: dict) -> bytes:
    """Downstream skill against the number of real training scenes: one panel per task, one
    line per training set (mean over replicates), a band of one standard deviation."""
    tasks = list(curve)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        s = curve[task]
        for k, (name, per) in enumerate(s["sets"].items()):
            counts = sorted(int(c) for c in per)
            mean = np.array([per[_key(per, c)]["mean"] for c in counts])
            std = np.array([per[_key(per, c)]["std"] for c in counts])
            color, ls = CURVE_STYLE.get(name, (KNOB_COLORS[k % len(KNOB_COLORS)], "-."))
            ax.plot(counts, mean, ls, color=color, marker="o", ms=3, label=name)
            ax.fill_between(counts, mean - std, mean + std, color=color, alpha=0.15)
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xticks(sorted(int(c) for c in s["counts"]))
        ax.set_xlabel("real training scenes")
        ax.set_ylabel(s.get("skill_name", "skill"))
        ax.set_title(task)
    axes[0][0].legend(fontsize=7)
    return _png(fig)


def _key(per: dict, count: int):
    """A count's key as stored (int in memory, str after a JSON round trip)."""
    return count if count in per else str(count)
