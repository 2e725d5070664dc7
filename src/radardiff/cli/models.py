"""``radardiff models``: the shipped models, and exporting a run as a model folder."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """The models that ship with radardiff (name, kind, size, units, score against its floor).

    Every command that reads a run directory takes a shipped model's NAME instead.

    \b
    Examples:
      radardiff models                                    # the list
      radardiff sample envisat-noise-32 --n 1000 --out noise.h5
      radardiff models show envisat-noise-32             # its model card
      radardiff models export runs/mine --name my-noise --out my-noise   # a run as a model folder
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_cmd)


@models.command("list")
@click.option("--markdown", is_flag=True, help="A Markdown table with every card score.")
def list_cmd(markdown: bool = False) -> None:
    """List the shipped models.

    \b
    Example:
      radardiff models list --markdown     # the table of docs/models.md
    """
    from radardiff.models.export import headline, markdown_table
    from radardiff.models.shipped import folder_bytes, read_facts, shipped_models

    found = shipped_models()
    if not found:
        click.echo("no shipped models in this installation")
        return
    if markdown:
        docs = {name: read_facts(folder) for name, folder in found.items()}
        sizes = {name: folder_bytes(folder) for name, folder in found.items()}
        click.echo(markdown_table(docs, sizes))
        return
    click.echo(f"{'name':<22s} {'kind':<16s} {'size':>8s} {'units':<8s} score against its floor")
    for name, folder in found.items():
        doc = read_facts(folder)
        px = f"{doc['image_size']}px" + (f" x{doc['channels']}" if doc["channels"] > 1 else "")
        classes = f", {doc['num_classes']} classes" if doc.get("num_classes") else ""
        click.echo(
            f"{name:<22s} {doc['kind']:<16s} {folder_bytes(folder) / 1e6:6.1f}MB "
            f"{doc.get('units') or '-':<8s} {headline(doc)} [{px}{classes}, "
            f"{doc['sampler']} {doc['sampler_steps']} calls]"
        )


@models.command("show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Print a shipped model's card (its folder is printed first)."""
    from radardiff.models.shipped import CARD, is_exported, resolve_run

    folder = resolve_run(name)
    if not is_exported(folder):
        raise click.BadParameter(f"{name}: not an exported model folder", param_hint="NAME")
    click.echo(f"# folder: {folder}")
    click.echo((folder / CARD).read_text(encoding="utf-8"))


@models.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Model folder.")
@click.option("--name", required=True, help="The model's name (its card's title).")
@click.option(
    "--half/--fp32", default=True, show_default=True, help="Weights in float16 or float32."
)
@click.option(
    "--scores",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="JSON of measured scores for the card: {generated: {...}, floor: {...}, samples, "
    "real, memorisation_ratio, seconds_per_1000, train_minutes, cpu}.",
)
@click.option(
    "--facts",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="JSON of card facts: summary, licence, data_licence, dataset, tags, command, limits.",
)
@click.option("--replace", is_flag=True, help="Overwrite an existing --out folder.")
def export_cmd(run_dir, out, name, half, scores, facts, replace) -> None:
    """Export RUN_DIR's EMA network as a self-contained model folder with a model card.

    The folder loads with diffusers' UNet2DModel.from_pretrained and with every radardiff
    command that reads a run (radardiff sample FOLDER ...); manifest.json guards every file.

    \b
    Example:
      radardiff models export runs/noise --name my-noise --out models/my-noise --scores s.json
      radardiff sample models/my-noise --n 64 --out s.h5
    """
    from radardiff.errors import ConfigError
    from radardiff.models.export import export_run
    from radardiff.models.shipped import refuse_shipped

    refuse_shipped(out, "--out")

    def read(path: str | None, option: str) -> dict:
        if path is None:
            return {}
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"{option} {path}: not a readable JSON file ({err})") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{option} {path}: must hold a JSON object")
        return doc

    path = export_run(run_dir, out, name, half=half, scores=read(scores, "--scores"),
                      facts=read(facts, "--facts"), replace=replace)  # fmt: skip
    click.echo(f"exported {run_dir} as {name}: {path}")
