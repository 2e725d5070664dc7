"""``radardiff data prepare`` and ``radardiff data inspect``: thin wrappers of the library."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from radardiff.cli._common import SEED
from radardiff.data.dataset_file import KINDS
from radardiff.data.readers import CLASS_MODES, FORMATS
from radardiff.errors import ConfigError


def _parse_resize(ctx, param, value: str | None):
    if value is None:
        return None
    try:
        parts = [int(v) for v in value.lower().split("x")]
    except ValueError:
        raise click.BadParameter(
            f"'{value}' is not S or HxW (for example 128 or 128x256)"
        ) from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise click.BadParameter(f"'{value}' is not S or HxW with positive sizes")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def _parse_split(ctx, param, value: str | None):
    from radardiff.data.prepare import parse_split

    if value is None:
        return None
    try:
        return parse_split(value)
    except ConfigError as err:
        raise click.BadParameter(str(err).removeprefix("--split: ")) from None


@click.command("prepare")
@click.argument("src", type=click.Path(path_type=str))
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="Output FILE.h5 (FILE_train.h5 ... with --split).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="Source format.",
)
@click.option(
    "--key",
    help="Data key in HDF5 / .npz files (default: unwrap, real_data, wrap, images, data or the only one).",
)
@click.option(
    "--label-key",
    help="Label key in HDF5 / .npz files (one label per file or per sample); in a CSV table "
    "the label column (header name, first, last or index).",
)
@click.option(
    "--classes",
    type=click.Choice(CLASS_MODES),
    default="auto",
    show_default=True,
    help="Class from the file name (text before the first _), the sub-folder, or none.",
)
@click.option(
    "--nodata",
    type=float,
    help="Value that marks no data (becomes NaN); overrides the GeoTIFF's own.",
)
@click.option("--tile", type=click.IntRange(min=1), help="Cut items into TILE x TILE crops.")
@click.option("--stride", type=click.IntRange(min=1), help="Tile step in pixels [default: TILE].")
@click.option(
    "--max-nan",
    type=click.FloatRange(0, 1),
    help="Drop samples with a larger no-data fraction [default: 0.5 with --tile, else 1].",
)
@click.option(
    "--resize",
    callback=_parse_resize,
    help="Resize each sample to S or HxW (no-data aware bilinear).",
)
@click.option(
    "--crop",
    callback=_parse_resize,
    help="Centre-crop each sample to S or HxW, padding smaller ones with no data (mixed sizes "
    "without resampling).",
)
@click.option("--kind", type=click.Choice(KINDS), help="Dataset kind [default: from the source].")
@click.option("--units", help="Physical units [default: from the source].")
@click.option("--db", is_flag=True, help="Convert intensity to dB (10 log10) first.")
@click.option(
    "--complex",
    "complex_mode",
    type=click.Choice(["intensity", "amplitude", "db", "phase"]),
    help="Complex SAR data (a complex type, or real/imaginary channel pairs) to |z|^2, |z|, "
    "dB or phase (rad).",
)
@click.option(
    "--split", callback=_parse_split, help="Train,val[,test] fractions, e.g. 0.8,0.1,0.1."
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the split.")
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="NAME=PATH",
    help="A map beside the images, tiled with them (repeatable): one file for every scene (a "
    "DEM beside a stack), a folder of maps named like the scenes, or a stack of one per scene.",
)
@click.option(
    "--map-units",
    multiple=True,
    metavar="NAME=UNITS",
    help="Units of a map [default: its GeoTIFF tag; m for a DEM by its file name].",
)
@click.option(
    "--map-classes",
    multiple=True,
    metavar="NAME=A,B,..",
    help="Make a map a label map: class names for the values 0, 1, ... or VALUE:NAME pairs.",
)
@click.option("--map-nodata", multiple=True, metavar="NAME=VALUE", help="A map's no-data value.")
def prepare_cmd(
    src,
    out,
    fmt,
    key,
    label_key,
    classes,
    nodata,
    tile,
    stride,
    max_nan,
    resize,
    crop,
    kind,
    units,
    db,
    complex_mode,
    split,
    seed,
    maps,
    map_units,
    map_classes,
    map_nodata,
):
    """Convert SRC (image folder, TenGeoP folders, HDF5, GeoTIFF, .npy/.npz, CSV) to dataset files.

    \b
    Examples:
      radardiff data prepare mnist_png/ --out mnist.h5 --split 0.8,0.1,0.1
      radardiff data prepare TenGeoP-SARwv/ --out sar.h5 --resize 128 --db
      radardiff data prepare ifgs/ --format hdf5 --key unwrap --out unw.h5
      radardiff data prepare scenes/ --nodata 0 --tile 32 --stride 16 --out tiles.h5
      radardiff data prepare slc_iq.npy --complex db --tile 64 --out slc_db.h5
      radardiff data prepare ship_chips/ --crop 64 --classes filename --out ships.h5
      radardiff data prepare mnist_5k.csv.gz --out mnist.h5     # 784 pixels + label per row
      radardiff data prepare pyrate_envisat_unw/ --nodata 0 --tile 32 --stride 8 \\
          --map dem=pyrate_envisat_unw/dem.tif --out ifg_dem.h5   # the DEM tiled beside
      radardiff data prepare scenes/ --tile 64 --map land=masks/ \\
          --map-classes land=0:water,1:land,255:ship --out labelled.h5
    """
    from radardiff.cli._common import bar_callback
    from radardiff.cli._common import progress as progress_bar
    from radardiff.data.map_sources import parse_map_specs
    from radardiff.data.prepare import prepare

    specs = parse_map_specs(maps, map_units, map_classes, map_nodata)

    with progress_bar(0, "prepare", unit="item") as bar:
        result = prepare(
            src,
            out,
            format=fmt,
            key=key,
            label_key=label_key,
            classes=classes,
            nodata=nodata,
            tile=tile,
            stride=stride,
            max_nan_fraction=max_nan,
            resize=resize,
            crop=crop,
            kind=kind,
            units=units,
            db=db,
            complex_mode=complex_mode,
            split=split,
            seed=seed,
            progress=bar_callback(bar),
            maps=specs,
        )
    _echo_prepared(result)


def _echo_prepared(result) -> None:
    """What ``data prepare`` read, wrote and skipped."""
    c, h, w = result.shape
    click.echo(
        f"read {result.n_items} items ({result.format}) in {result.seconds:.1f} s; "
        f"samples ({c}, {h}, {w}), kind {result.kind}, units {result.units}"
    )
    if result.maps:
        click.echo(f"maps: {'; '.join(m.describe() for m in result.maps)}")
    for o in result.outputs:
        classes_txt = f"  classes {o.class_counts}" if o.class_counts is not None else ""
        click.echo(f"wrote {o.path}: {o.n} samples{classes_txt}")
    skipped = (result.skipped_all_nan, result.skipped_nan_fraction, result.skipped_too_small)
    if any(skipped):
        click.echo(
            "skipped {} all-NaN, {} over the NaN limit, {} smaller than the tile".format(*skipped)
        )


@click.command("inspect")
@click.argument("file", type=click.Path(path_type=str))
@click.option(
    "--preview", type=click.Path(dir_okay=False), help="Write a PNG grid of samples here."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def inspect_cmd(file, preview, as_json):
    """Summarise a dataset FILE: count, shape, classes, values in physical units, no data.

    \b
    Examples:
      radardiff data inspect mnist_train.h5
      radardiff data inspect tiles.h5 --preview tiles.png
      radardiff data inspect tiles.h5 --json > summary.json
    """
    from radardiff.data.inspect import inspect

    result = inspect(file, preview=preview)
    if as_json:
        click.echo(json.dumps(asdict(result), default=str, indent=2))
    else:
        click.echo(result.to_text())
