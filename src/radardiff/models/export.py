"""Export a trained run as a self-contained model folder with a model card.

The folder's layout is described in :mod:`radardiff.models.shipped`. The card is written from
facts: what the run's files say (kind, units, pixel spacing, size, classes, sampler, steps) and
what the caller measured (``scores``: generated against the floor) or knows (``facts``: licence,
data set, the command that trained it). A number the caller did not give is not written.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from radardiff._files import replace_dir
from radardiff.errors import RunDirError
from radardiff.models.run import MANIFEST, _file_digest, architecture, load_run
from radardiff.models.shipped import CARD, FACTS, copy_run_files

# the scores a card shows, in this order, with what they mean
SCORES = {
    "semivariogram_rel_error": "semivariogram relative error (0 is perfect)",
    "lag1_ratio": "lag-1 semivariance ratio (1: as rough as the data at pixel scale)",
    "psd_log_rmse": "PSD log-RMSE, decades",
    "histogram_w1": "value distribution, Wasserstein-1 (data units)",
    "noise_fraction": "samples that look like white noise (fraction)",
    "sar_enl_ratio": "ENL ratio of homogeneous windows (1 is right)",
    "sar_k2_w1": "log-cumulant k2, Wasserstein-1",
    "sar_acf1_error": "speckle lag-1 autocorrelation error",
    "sar_peak_db_w1": "bright targets: peak dB, Wasserstein-1",
}
HEADLINE = ("semivariogram_rel_error", "sar_enl_ratio", "histogram_w1")


def model_facts(run, name: str, half: bool) -> dict:
    """What the run's own files say about the model."""
    cfg, info = run.cfg, run.data_info
    state = json.loads((run.checkpoint / "state.json").read_text(encoding="utf-8"))
    classes = info.get("class_names") or []
    params = sum(p.numel() for p in run.model.parameters())
    return {
        "name": name,
        "kind": info.get("kind", "generic"),
        "units": info.get("units", ""),
        "pixel_spacing_m": info.get("pixel_spacing_m"),
        "image_size": cfg.model.image_size,
        "channels": run.data_channels,
        "num_classes": cfg.model.num_classes,
        "class_names": list(classes),
        "range_conditioning": cfg.model.range_conditioning,
        "sampler": cfg.sample.sampler,
        "sampler_steps": cfg.sample.steps,
        "sampler_options": dict(cfg.sample.options),
        "prediction": cfg.diffusion.prediction,
        "normalization": cfg.data.normalization,
        "train_steps": state.get("step"),
        "parameters": params,
        "weights_dtype": "float16" if half else "float32",
        "recipe": cfg.name,
    }


def export_run(
    run_dir: str | Path,
    out: str | Path,
    name: str,
    half: bool = True,
    scores: dict | None = None,
    facts: dict | None = None,
    replace: bool = False,
) -> Path:
    """Write ``out``: the run's EMA network (half precision with ``half``), its files, the card
    and the manifest, whole or not at all."""
    out = Path(out)
    if out.exists() and not replace:
        raise RunDirError(f"{out}: exists (pass --replace to overwrite it)")
    run = load_run(run_dir, weights="ema")
    doc = model_facts(run, name, half)
    doc.update(facts or {})
    doc["scores"] = scores or {}

    def write(tmp: Path) -> None:
        model = copy.deepcopy(run.model)
        model = model.half() if half else model.float()
        model.save_pretrained(tmp, safe_serialization=True)
        copy_run_files(run.run.root, run.checkpoint, tmp)
        (tmp / FACTS).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", "utf-8")
        (tmp / CARD).write_text(model_card(doc), encoding="utf-8")
        files = sorted(p for p in tmp.rglob("*") if p.is_file() and p.name != MANIFEST)
        manifest = {
            "format": 1,
            "sha256": {str(p.relative_to(tmp)): _file_digest(p) for p in files},
            "architecture": architecture(run.cfg),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), "utf-8")

    replace_dir(out, write)
    return out


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def headline(doc: dict) -> str:
    """One score against its floor, for listings (``semivariogram error 0.09 (floor 0.13)``)."""
    sc = doc.get("scores") or {}
    gen, floor = sc.get("generated") or {}, sc.get("floor") or {}
    for key in HEADLINE:
        if gen.get(key) is not None:
            label = SCORES[key].split(" (")[0].split(",")[0]
            return f"{label} {_fmt(gen[key])} (floor {_fmt(floor.get(key))})"
    return "not measured"


def markdown_table(docs: dict[str, dict], sizes: dict[str, int]) -> str:
    """Shipped models side by side: size, sampler, cost and each score against its floor."""
    keys = [k for k in SCORES if any(k in ((d.get("scores") or {}).get("generated") or {})
                                     for d in docs.values())]  # fmt: skip
    head = ["model", "kind", "size on disk", "sampler, calls", "s per 1000 (CPU)",
            *[SCORES[k].split(" (")[0] for k in keys], "memorisation"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, d in docs.items():
        sc = d.get("scores") or {}
        gen, floor = sc.get("generated") or {}, sc.get("floor") or {}
        cells = [
            f"`{name}`", d["kind"], f"{sizes[name] / 1e6:.1f} MB",
            f"{d['sampler']}, {d['sampler_steps']}", _fmt(sc.get("seconds_per_1000")),
            *[f"{_fmt(gen.get(k))} ({_fmt(floor.get(k))})" for k in keys],
            _fmt(sc.get("memorisation_ratio")),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def model_card(doc: dict) -> str:
    """The model card (Hugging Face layout) of an exported model's facts."""
    sc = doc.get("scores") or {}
    tags = ["radardiff", "diffusers", "radar", *doc.get("tags", [])]
    head = [
        "---",
        f"license: {doc.get('licence') or 'other'}",
        "library_name: diffusers",
        "pipeline_tag: unconditional-image-generation",
        "tags:",
        *[f"- {t}" for t in dict.fromkeys(tags)],
    ]
    if doc.get("dataset"):
        head += ["datasets:", f"- {doc['dataset']}"]
    head.append("---")
    size = doc["image_size"]
    units = doc.get("units") or "dimensionless"
    spacing = doc.get("pixel_spacing_m")
    classes = doc.get("class_names") or []
    opts = ", ".join(f"{k}={v}" for k, v in (doc.get("sampler_options") or {}).items())
    body = [
        f"# {doc['name']}",
        "",
        f"A small diffusion model that generates {doc.get('summary') or doc['kind']}.",
        "",
        "## What it generates",
        "",
        f"- kind `{doc['kind']}`, {doc['channels']} channel(s) of {size} x {size} pixels, "
        f"in {units}" + (f", {spacing:g} m per pixel" if spacing else ""),
        f"- classes: {', '.join(map(str, classes))} (`--class`)"
        if doc.get("num_classes")
        else "- unconditional",
        f"- a {doc['prediction']}-prediction UNet (diffusers `UNet2DModel`, "
        f"{doc['parameters'] / 1e6:.2f} M parameters, weights in {doc['weights_dtype']})",
        "",
        "## Use",
        "",
        "```bash",
        f"radardiff sample {doc['name']} --n 1000 --out samples.h5",
        "```",
        "",
        "```python",
        *(
            [
                "from radardiff.models import load_model, load_run",
                "",
                f'run = load_run("{doc["name"]}")  # network, normaliser, sampler settings',
                "# class and range share one embedding: diffusers' from_pretrained alone would",
                "# drop its weights; load_model builds it (a diffusers UNet2DModel)",
                'unet = load_model("path/to/this/folder")',
            ]
            if doc.get("num_classes") and doc.get("range_conditioning")
            else [
                "from diffusers import UNet2DModel",
                "from radardiff.models import load_run",
                "",
                f'run = load_run("{doc["name"]}")  # network, normaliser, sampler settings',
                'unet = UNet2DModel.from_pretrained("path/to/this/folder")',
            ]
        ),
        "```",
        "",
        f"Default sampler: `{doc['sampler']}`, {doc['sampler_steps']} network calls"
        + (f" ({opts})" if opts else "")
        + ".",  # fmt: skip
    ]
    if sc.get("seconds_per_1000") is not None:
        body.append(f"It took {sc['seconds_per_1000']:.1f} s per 1000 samples on {sc.get('cpu')} "
                    "(fp32, `radardiff sample` defaults).")  # fmt: skip
    body += [
        "",
        "## Training",
        "",
        f"- data: {doc.get('dataset') or 'see the command'}; licence of the data: "
        f"{doc.get('data_licence') or 'see the data set'}",
        f"- recipe `{doc['recipe']}`, {doc.get('train_steps')} steps"
        + (
            f", {sc['train_minutes']:.1f} CPU minutes on {sc.get('cpu')}"
            if sc.get("train_minutes") is not None
            else ""
        ),  # fmt: skip
    ]
    if doc.get("teacher"):
        body.append(f"- distilled from `{doc['teacher']}`")
    if doc.get("command"):
        body += ["", "```bash", doc["command"], "```"]
    gen, floor = sc.get("generated") or {}, sc.get("floor") or {}
    alt = sc.get("floor_alt")  # a second floor: {"label": ..., "scores": {...}}
    rows = [k for k in SCORES if gen.get(k) is not None]
    if rows:
        body += [
            "",
            "## Measured scores",
            "",
            f"{sc.get('samples')} samples of the default sampler"
            + (f" (the mean of {len(sc['seeds'])} seeds' scores)" if sc.get("seeds") else "")
            + f" against {sc.get('real')} real "
            "images of the training distribution; the floor is the same score of other real "
            "images of that distribution against them (what a perfect generator reaches)"
            + (f"; the second floor ({alt['label']}) is the same score of "
               f"{alt.get('description') or alt['label']}" if alt else "") + ".",
            "",
            "| score | generated | floor |" + (f" floor, {alt['label']} |" if alt else "")
            + (" seed 0, float16 / float32 weights |" if sc.get("fp32") else ""),
            "| --- | --- | --- |" + (" --- |" if alt else "") + (" --- |" if sc.get("fp32") else ""),
        ]  # fmt: skip
        fp32 = (sc.get("fp32") or {}).get("generated") or {}
        spread = sc.get("spread") or {}
        for k in rows:
            extra = f" {_fmt(alt['scores'].get(k))} |" if alt else ""
            half0 = (sc.get("seeds") or {}).get("0", gen)
            extra += f" {_fmt(half0.get(k))} / {_fmt(fp32.get(k))} |" if sc.get("fp32") else ""
            value = _fmt(gen[k]) + (f" ± {_fmt(spread[k])}" if spread.get(k) is not None else "")
            body.append(f"| {SCORES[k]} | {value} | {_fmt(floor.get(k))} |{extra}")
        if spread:
            n_seeds = len(sc.get("seeds") or {}) or "several"
            body += ["", f"± is the spread `make cards` allows a new seed's score: the 99 % "
                     f"prediction interval from the {n_seeds} seeds' scores (Student's t), at "
                     "least 10 % of the score."]  # fmt: skip
        if sc.get("memorisation_ratio") is not None:
            body += ["", f"Memorisation: median distance of samples to their nearest training "
                     f"image over that of images never trained on, {sc['memorisation_ratio']:.2f} "
                     f"(about 1: no copies; near 0: copies); near copies "
                     f"{sc.get('near_copy_fraction', 0):.3f} (about 0.05 without copying)."]  # fmt: skip
    body += ["", "## Intended use and limits", "", doc.get("limits") or "-", ""]
    return "\n".join(head + [""] + body)
