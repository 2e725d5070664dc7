"""The HTML report of a run: one self-contained file (figures embedded as data URIs)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import numpy as np

from radardiff._files import holding
from radardiff.config import RunDir, atomic_write_text, load_config
from radardiff.data.dataset_file import DatasetFile
from radardiff.errors import RunDirError
from radardiff.report import figures

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
.row{display:flex;flex-wrap:wrap;gap:1em}.row figure{margin:0}img{max-width:100%}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.note{color:#777;font-size:.9em}
"""


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>'


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


def _newest(folder: Path, pattern: str) -> Path | None:
    files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def _cmap(info) -> str:
    return "gray" if info.kind == "sar_backscatter" else "RdBu_r"


def _grids(real: DatasetFile | None, fake: DatasetFile | None) -> str:
    sets = [(name, d) for name, d in (("real", real), ("generated", fake)) if d is not None]
    if not sets:
        return '<p class="note">No data to show.</p>'
    loaded = {
        name: (d.images(slice(0, min(len(d), 2000))), d.labels(slice(0, min(len(d), 2000))), d.info)
        for name, d in sets
    }
    pooled = np.concatenate([x[:, 0][np.isfinite(x[:, 0])] for x, _, _ in loaded.values()])
    lo, hi = np.percentile(pooled, [2, 98]) if pooled.size else (0.0, 1.0)
    if loaded and all(lab is not None for _, lab, _ in loaded.values()):
        names = next(iter(loaded.values()))[2].class_names or []
        parts = []
        for c in np.unique(np.concatenate([lab for _, lab, _ in loaded.values()])):
            cname = names[c] if c < len(names) else str(c)
            row = [
                _img(
                    figures.image_grid(
                        x[lab == c][:16], f"{name}: {cname}", info.units, lo, hi, 4, _cmap(info)
                    ),  # fmt: skip
                    f"{name} {cname}",
                )
                for name, (x, lab, info) in loaded.items()
                if (lab == c).any()
            ]
            parts.append(f'<h3>{html.escape(cname)}</h3><div class="row">{"".join(row)}</div>')
        return "".join(parts)
    row = [
        _img(figures.image_grid(x, name, info.units, lo, hi, cmap=_cmap(info)), name)
        for name, (x, _, info) in loaded.items()
    ]
    return f'<div class="row">{"".join(row)}</div>'


def _metrics_sections(m: dict) -> str:
    """The plots of a metrics.json: semivariogram, PSD, histogram, per-sample ranges and stds."""
    units = m.get("real", {}).get("units", "")
    out = []
    if m.get("semivariogram"):
        out.append(_semivariogram_figure(m["semivariogram"], units))
    if m.get("psd"):
        out.append(_psd_figure(m["psd"]))
    if m.get("histogram"):
        out.append(_histogram_figure(m["histogram"], units))
    if m.get("ranges"):
        out += _spread_figures(m["ranges"], units)
    if not out:
        return '<p class="note">No radar statistics.</p>'
    return f'<div class="row">{"".join(out)}</div>'


def _semivariogram_figure(sv: dict, units: str) -> str:
    lags = sv.get("lags_m") or sv["lags_px"]
    xl = "lag (m)" if sv.get("lags_m") else "lag (pixels)"
    png = figures.band_plot(
        lags,
        sv["real"],
        sv["fake"],
        xl,
        f"semivariance ({units}²)",
        f"semivariogram ({sv.get('ci', '')})",
    )
    return _img(png, "semivariogram")


def _psd_figure(psd: dict) -> str:
    png = figures.band_plot(
        psd["freq_cycles_per_px"],
        psd["real"],
        psd["fake"],
        "frequency (cycles/pixel)",
        "power",
        "radially averaged PSD",
        logx=True,
        logy=True,
    )
    return _img(png, "psd")


def _histogram_figure(hist: dict, units: str) -> str:
    png = figures.histogram_plot(
        hist["bin_edges"], hist["real"], hist["fake"], hist.get("units", units)
    )
    return _img(png, "histogram")


def _spread_figures(rng: dict, units: str) -> list[str]:
    """Distributions of the per-sample ranges and standard deviations."""
    ranges = figures.distribution_plot(
        rng["real_range"], rng["fake_range"], f"per-sample range ({units})", "range distribution"
    )
    stds = figures.distribution_plot(
        rng["real_std"], rng["fake_std"], f"per-sample std ({units})", "std distribution"
    )
    return [_img(ranges, "ranges"), _img(stds, "stds")]


def _noise_gallery(m: dict) -> str:
    """The roughest generated samples (highest lag-1 semivariance) beside the roughest real ones:
    where a sampler turns samples into pixel noise, they show here."""
    ns = m.get("noise_samples")
    if not ns:
        return '<p class="note">No semivariogram evaluated: no noise-sample check.</p>'
    shown = []
    for name in ("fake", "real"):
        path = Path(m.get(name, {}).get("path") or "")
        idx = ns.get(f"worst_{name}") or []
        if not idx or not path.is_file():
            continue
        with DatasetFile(path) as ds:
            shown.append((name, ds.images(np.sort(np.asarray(idx))), ds.info.units))
    if not shown:
        return '<p class="note">The evaluated files are gone: no gallery.</p>'
    pooled = np.concatenate([x[:, 0][np.isfinite(x[:, 0])] for _, x, _ in shown])
    lo, hi = np.percentile(pooled, [2, 98]) if pooled.size else (0.0, 1.0)
    title = {"fake": "roughest generated", "real": "roughest real"}
    row = "".join(
        _img(figures.image_grid(x, title[name], units, lo, hi, 4), title[name])
        for name, x, units in shown
    )
    s = m.get("scalars", {})
    frac = s.get("noise_fraction")
    frac_real = s.get("noise_fraction_real")
    note = (
        f"Noise samples (lag-1 semivariance above {ns['factor']:g} x the real set's "
        f"{ns['percentile']:g}th percentile, {ns['threshold']:.4g}): generated "
        f"{100 * frac:.1f} %, real {100 * frac_real:.1f} %; lag-1 ratio generated / real "
        f"{s.get('lag1_ratio', float('nan')):.3g}."
        if frac is not None and frac_real is not None
        else ""
    )
    return f'<p class="note">{html.escape(note)}</p><div class="row">{row}</div>'


# the SAR summary's rows: (label, key in the summary, format)
SAR_ROWS = (
    ("ENL of homogeneous windows", "enl", "{:.3g}"),
    ("coefficient of variation", "cv", "{:.3g}"),
    ("homogeneous windows per tile", "windows", "{:.3g}"),
    ("images with a measurable ENL", "enl_measurable", "{:.0%}"),
    ("log-cumulant k2", "k2", "{:.3f}"),
    ("log-cumulant k3", "k3", "{:.3f}"),
    ("brightest pixel (dB)", "peak_db", "{:.2f}"),
    ("its contrast over its neighbours (dB)", "peak_contrast_db", "{:.2f}"),
)


def _sar_cells(summary: dict | None, key: str, fmt: str, ch: int) -> str:
    value = None if summary is None else summary.get(key)
    if isinstance(value, list):
        value = value[ch] if ch < len(value) else None
        if isinstance(value, list):  # autocorrelation lags: the first
            value = value[0]
    return f"<td>{fmt.format(value)}</td>" if isinstance(value, int | float) else "<td>-</td>"


def _sar_table(sar: dict) -> str:
    """Real against generated, per channel: the SAR summary of metrics.json."""
    real, fake = sar.get("real") or {}, sar.get("fake") or {}
    channels = len(real.get("k2") or [0])
    head = "".join(f"<th>real, ch {c}</th><th>generated, ch {c}</th>" for c in range(channels))
    rows = list(SAR_ROWS) + [("speckle correlation, lag 1 along x", "acf_x", "{:.3f}"),
                             ("speckle correlation, lag 1 along y", "acf_y", "{:.3f}")]  # fmt: skip
    body = ""
    for label, key, fmt in rows:
        cells = "".join(_sar_cells(s, key, fmt, c) for c in range(channels) for s in (real, fake))
        body += f"<tr><td>{html.escape(label)}</td>{cells}</tr>"
    for q in ("1", "50", "99"):
        cells = "".join(
            _sar_cells(s.get("db_quantiles"), q, "{:.2f}", c)
            for c in range(channels)
            for s in (real, fake)
        )
        body += f"<tr><td>{q}th percentile (dB)</td>{cells}</tr>"
    return f"<table><tr><th>statistic</th>{head}</tr>{body}</table>"


def _sar_parts(run: RunDir, m: dict | None) -> list[str]:
    """The SAR section (heading, table, texture diagram) where the metrics hold one."""
    if not m or not m.get("sar"):
        return []
    out = _sar_table(m["sar"])
    arrays_path = run.eval / "arrays.npz"
    if arrays_path.is_file():
        with np.load(arrays_path) as a:
            if "sar_k2_real" in a.files:
                out += _img(figures.texture_diagram(a["sar_k2_real"][:, 0], a["sar_k3_real"][:, 0],
                                                    a["sar_k2_fake"][:, 0], a["sar_k3_fake"][:, 0]),
                            "texture diagram")  # fmt: skip
    return ["<h2>SAR statistics</h2>", out]


def _metrics_table(m: dict) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.6g}</td></tr>"
        for k, v in m.get("scalars", {}).items()
        if isinstance(v, int | float)
    )
    return f"<table><tr><th>metric</th><th>value</th></tr>{rows}</table>" if rows else ""


def _study(run: RunDir) -> str:
    path = run.root / "study" / "samplers.json"
    if not path.is_file():
        return '<p class="note">No sampler study yet (radardiff study samplers RUN_DIR).</p>'
    study = json.loads(path.read_text(encoding="utf-8"))
    rows, ref = study.get("rows", []), study.get("reference") or {}
    if not rows:
        return '<p class="note">The sampler study holds no rows.</p>'
    figs = []
    for metric in STUDY_PLOTS:
        if any(r.get(metric) is not None for r in rows):
            figs.append(_img(figures.study_plot(rows, metric, ref.get(metric)), metric))
    if all("s_per_sample" in r for r in rows):
        figs.append(_img(figures.study_plot(rows, "s_per_sample", logy=True), "time per sample"))
    return f'<div class="row">{"".join(figs)}</div>' + _study_table(study)


STUDY_PLOTS = ("semivariogram_rel_error", "lag1_ratio", "noise_fraction", "psd_log_rmse", "fid")
STUDY_COLUMNS = (
    ("network calls", "nfe", "{:.0f}"),
    ("s / sample", "s_per_sample", "{:.3g}"),
    ("semivariogram rel. error", "semivariogram_rel_error", "{:.3f}"),
    ("lag-1 ratio", "lag1_ratio", "{:.2f}"),
    ("noise samples", "noise_fraction", "{:.1%}"),
    ("PSD log-RMSE", "psd_log_rmse", "{:.3f}"),
)


def _cell(fmt: str, value) -> str:
    return "" if value is None else html.escape(fmt.format(value))


def _study_table(study: dict) -> str:
    """Every row of the study beside the floor (training images scored the same way)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in STUDY_COLUMNS)
    body = []
    for r in study["rows"]:
        cells = "".join(f"<td>{_cell(fmt, r.get(k))}</td>" for _, k, fmt in STUDY_COLUMNS)
        label = f"{r['sampler']} {r['steps']}"
        body.append(f"<tr><td>{html.escape(label)}</td>{cells}</tr>")
    ref = study.get("reference")
    if ref:
        cells = "".join(
            f"<td>{_cell(fmt, None if k in ('nfe', 's_per_sample') else ref.get(k))}</td>"
            for _, k, fmt in STUDY_COLUMNS
        )
        body.append(f"<tr><td>{ref['n']} training images (floor)</td>{cells}</tr>")
    settings = study.get("settings", {})
    note = (
        f"{settings.get('n')} samples per row, seed {settings.get('seed')}, checkpoint "
        f"{settings.get('checkpoint')}, against {settings.get('real')}."
    )
    return (
        f"<table><tr><th>sampler, steps</th>{head}</tr>{''.join(body)}</table>"
        f'<p class="note">{html.escape(note)}</p>'
    )


def _downstream(run: RunDir) -> str:
    """The train-on-generated / test-on-real tables of ``radardiff downstream experiment``: the
    InSAR tasks', the classification's and the segmentation's."""
    from radardiff.evaluate import classification, downstream

    parts = []
    for name in (downstream.RESULTS, classification.RESULTS, classification.SEGMENTATION):
        path = run.root / "downstream" / name
        if path.is_file():
            parts.append(_downstream_tables(json.loads(path.read_text(encoding="utf-8"))))
    if not parts:
        return '<p class="note">No downstream experiment yet (radardiff downstream experiment).</p>'
    return "".join(parts)


def _curve_html(result: dict) -> str:
    """The curve over the amount of real data: its figure and tables."""
    from radardiff.evaluate.curve import curve_tables, describe_curve

    parts = [_img(figures.curve_plot(result["curve"]), "skill against real scenes"),
             f'<p class="note">{html.escape(describe_curve(result))}</p>']  # fmt: skip
    for title, head, rows, note in curve_tables(result):
        th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                       for r in rows)  # fmt: skip
        parts.append(f"<h3>{html.escape(title)}</h3><table><tr>{th}</tr>{body}</table>"
                     + (f'<p class="note">{html.escape(note)}</p>' if note else ""))  # fmt: skip
    return "".join(parts)


@holding("folder", lambda folder: folder / "report")
def write_downstream_report(folder: str | Path) -> Path:
    """``FOLDER/report/index.html`` (and ``FOLDER/curve.png`` for a curve) from the results of
    a downstream experiment written to ``FOLDER`` (its ``--out``)."""
    from radardiff.evaluate import classification, downstream

    folder = Path(folder)
    names = (downstream.RESULTS, classification.RESULTS, classification.SEGMENTATION)
    found = [folder / n for n in names]
    found = [p for p in found if p.is_file()]
    if not found:
        raise RunDirError(
            f"{folder}: neither a run directory nor a downstream experiment's folder "
            f"(no config.toml, no {downstream.RESULTS})"
        )
    parts = [f"<h1>radardiff downstream experiment</h1><p class='sub'>"
             f"{html.escape(str(folder.resolve()))}</p>"]  # fmt: skip
    for path in found:
        result = json.loads(path.read_text(encoding="utf-8"))
        parts.append(_downstream_tables(result))
        if "curve" in result:
            from radardiff.config.io import atomic_write_bytes

            atomic_write_bytes(folder / "curve.png", figures.curve_plot(result["curve"]))
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>radardiff: '
        f"downstream</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    out = folder / "report" / "index.html"
    atomic_write_text(out, page)
    return out


def _downstream_tables(result: dict) -> str:
    from radardiff.evaluate.downstream import COLUMNS, table_rows

    if "curve" in result:
        return _curve_html(result)
    parts = []
    for task, summary in result.get("summary", {}).items():
        head = "".join(f"<th>{html.escape(h)}</th>" for _, h in COLUMNS[task])
        body = "".join(
            f"<tr><td>{html.escape(name)}</td>"
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + "</tr>"
            for t, name, cells in table_rows(result)
            if t == task
        )
        crit = ", ".join(
            f"{k.replace('_', ' ')}: {v:.3f}"
            if isinstance(v, float)
            else f"{k.replace('_', ' ')}: {v}"
            for k, v in summary.get("criteria", {}).items()
        )
        what = "set" if task in ("classification", "segmentation") else "noise"
        parts.append(
            f"<h3>{html.escape(task)}</h3><table><tr><th>training {what}</th>{head}"
            f'<th>seeds</th></tr>{body}</table><p class="note">{html.escape(crit)}</p>'
        )
    realism = result.get("noise_realism") or {}
    if realism:
        keys = list(next(iter(realism.values())))
        head = "".join(f"<th>{html.escape(k.replace('_', ' '))}</th>" for k in keys)
        body = "".join(
            f"<tr><td>{html.escape(name)}</td>"
            + "".join(f"<td>{_cell('{:.3f}', v.get(k))}</td>" for k in keys)
            + "</tr>"
            for name, v in realism.items()
        )
        parts.append(
            f"<h3>noise against the real training tiles</h3><table><tr><th>noise</th>{head}"
            f"</tr>{body}</table>"
        )
    cfg = result.get("config", {})
    if "classes" in cfg:
        counts = ", ".join(f"{k} {v}" for k, v in cfg.get("test_counts", {}).items())
        note = (
            f"Tested on the labelled images of {cfg.get('test_real')} ({counts}); chance "
            f"balanced accuracy {1 / len(cfg['classes']):.3f}; mean ± standard deviation over "
            "seeds."
        )
    else:
        note = (
            f"Tested on {cfg.get('n_test')} pairs of {cfg.get('test_real')}; "
            f"{cfg.get('n_train')} training pairs per set and seed; mean ± standard deviation "
            "over seeds."
        )
    return "".join(parts) + f'<p class="note">{html.escape(note)}</p>'


@holding("run_dir", lambda run: run / "report")
def write_report(run_dir: str | Path, real: str | None = None, samples: str | None = None) -> Path:
    """Build ``RUN/report/index.html`` from the files of the run directory."""
    run = RunDir(run_dir)
    run.require()
    cfg = load_config(run.config)
    metrics = json.loads(run.metrics.read_text(encoding="utf-8")) if run.metrics.is_file() else None
    fake_path = Path(samples) if samples else _newest(run.samples, "*.h5")
    real_path = (
        real or (metrics or {}).get("real", {}).get("path") or cfg.data.val or cfg.data.train
    )
    real_set = DatasetFile(real_path) if real_path and Path(real_path).is_file() else None
    fake_set = DatasetFile(fake_path) if fake_path and fake_path.is_file() else None
    if fake_path and fake_set is None:
        raise RunDirError(f"{fake_path}: samples file not found")
    ckpt = run.latest_checkpoint()
    parts = [
        f"<h1>radardiff report: {html.escape(cfg.name)}</h1>",
        f'<p class="sub">{html.escape(str(run.root.resolve()))} · checkpoint '
        f"{html.escape(ckpt.name if ckpt else 'none')}</p>",
        "<h2>Real and generated scenes</h2>",
        _grids(real_set, fake_set),
        "<h2>Training</h2>",
        _img(figures.loss_curves(rows), "loss")
        if (rows := _read_jsonl(run.stats))
        else '<p class="note">No training statistics.</p>',
        "<h2>Radar statistics</h2>",
        _metrics_sections(metrics)
        if metrics
        else '<p class="note">Not evaluated yet (radardiff evaluate).</p>',
        "<h2>Noise samples</h2>",
        _noise_gallery(metrics) if metrics else "",
        *_sar_parts(run, metrics),
        "<h2>Metrics</h2>",
        _metrics_table(metrics) if metrics else "",
        "<h2>Sampler study</h2>",
        _study(run),
        "<h2>Downstream value: trained on generated, tested on real</h2>",
        _downstream(run),
        "<h2>Configuration</h2>",
        f"<pre>{html.escape(run.config.read_text(encoding='utf-8'))}</pre>",
    ]
    page = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>radardiff: '
        f"{html.escape(cfg.name)}</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    out = run.report / "index.html"
    atomic_write_text(out, page)
    return out
