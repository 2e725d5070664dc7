"""Kind and units from the file names of common SAR / InSAR products.

Many products carry no units in their tags, but their names are standard. A name that matches
one of :data:`PRODUCTS` gives the kind and units of the set (the first file's), unless the file's
own tags state units, and ``--kind`` / ``--units`` override both:

==============================================  ===============  =========  ==================
name                                            kind             units      product
==============================================  ===============  =========  ==================
``*.geo.unw.tif`` / ``*.unw.tif``               insar_unwrapped  rad        LiCSAR, LiCSBAS
``*.geo.diff_pha.tif`` / ``*.diff_pha.tif``     insar_wrapped    rad        LiCSAR
``*.geo.diff.tif`` (phase exported)             insar_wrapped    rad        LiCSAR, GAMMA
``*.geo.cc.tif`` / ``*.cc.tif`` / ``*.cor.tif``  generic          coherence  LiCSAR, ISCE, GAMMA
``filt_topophase.unw*.tif``                     insar_unwrapped  rad        ISCE (exported)
``*_VV.tif`` / ``*_VH.tif`` / ``*_HH`` ``_HV``  sar_backscatter  linear/dB  BigEarthNet-S1, RTC
``Sigma0_VV_db.tif`` / ``*_db.tif``              sar_backscatter  dB         SNAP
``Sigma0_VV.tif`` / ``Gamma0_*`` / ``Beta0_*``   sar_backscatter  linear     SNAP
==============================================  ===============  =========  ==================

A polarisation suffix says backscatter but not its scale: BigEarthNet-S1 patches are in dB, ASF's
RTC products in linear power. Such sets are linear unless their values are mostly negative, which
only dB can be (:func:`radardiff.data.prepare.prepare` checks the values of every set said to be
linear).
"""

from __future__ import annotations

import re
from pathlib import Path

# (pattern on the lower-case file name, kind, units)
PRODUCTS: tuple[tuple[str, str, str], ...] = (
    (r"filt_topophase\.unw.*\.tiff?$", "insar_unwrapped", "rad"),
    (r"\.unw\.tiff?$", "insar_unwrapped", "rad"),
    (r"\.diff_pha\.tiff?$", "insar_wrapped", "rad"),
    (r"\.geo\.diff\.tiff?$", "insar_wrapped", "rad"),
    (r"\.(cc|cor|coh)\.tiff?$", "generic", "coherence"),
    (r"^(sigma0|gamma0|beta0)_.*_db\.tiff?$", "sar_backscatter", "dB"),
    (r"^(sigma0|gamma0|beta0)_[a-z]{2}\.tiff?$", "sar_backscatter", "linear"),
    (r"_db\.tiff?$", "sar_backscatter", "dB"),
    (r"_(vv|vh|hh|hv)\.tiff?$", "sar_backscatter", "linear"),  # dB when the values say so
)


def product_hint(path: Path) -> tuple[str, str] | None:
    """(kind, units) of a product file name in :data:`PRODUCTS`, or None."""
    name = path.name.lower()
    for pattern, kind, units in PRODUCTS:
        if re.search(pattern, name):
            return kind, units
    return None


POLARISATION = re.compile(r"^(?P<stem>.*)_(?P<pol>VV|VH|HH|HV)(?P<ext>\.tiff?)$", re.IGNORECASE)


def polarisation_groups(files: list[Path]) -> list[list[Path]] | None:
    """Files of one scene in several polarisations (``S1_patch_VV.tif``, ``S1_patch_VH.tif``),
    grouped into one multi-channel sample each, channels in a fixed order (VV, VH, HH, HV); None
    unless every file is such a file and every scene has the same two or more polarisations."""
    order = {"vv": 0, "vh": 1, "hh": 2, "hv": 3}
    scenes: dict[tuple[Path, str], dict[str, Path]] = {}
    for f in files:
        m = POLARISATION.match(f.name)
        if m is None:
            return None
        key = (f.parent, m["stem"])
        scenes.setdefault(key, {})[m["pol"].lower()] = f
    pols = {tuple(sorted(s, key=order.get)) for s in scenes.values()}
    if len(pols) != 1 or len(next(iter(pols))) < 2:
        return None
    return [[s[p] for p in sorted(s, key=order.get)] for s in scenes.values()]
