"""Small, standard networks of the downstream reference tasks, and their input encoding.

- :class:`SmallUNet`: a U-Net (Ronneberger et al. 2015) of ``levels`` resolutions, two 3x3
  convolutions with GroupNorm and SiLU per level, average-pool down, nearest up, skip
  concatenation; per-pixel regression (deformation recovery, unwrapping), or one logit per
  class and pixel (``arch='segmenter'``, segmentation).
- :class:`SmallCNN`: ``levels`` such blocks with 2x2 max-pooling, global average pooling and a
  linear layer to one logit (deformation detection) or one per class (``arch='classifier'``).

Inputs are encoded by :func:`encode`: unwrapped phase as ``(value / scale, valid)``, wrapped
phase as ``(cos, sin, valid)`` (phase is circular: the network never sees the 2 pi jump), with
0 where there is no data and ``valid`` the 0/1 no-data mask. Images of several channels (the
classifier's and the segmenter's: SAR in dB, VV and VH, phase, any labelled set) by
:func:`encode_channels`: each
channel standardised with its own mean and standard deviation (wrapped phase as its cos and
sin), then the mask.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHS = ("unet", "cnn", "classifier", "segmenter")


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = 4 if cout % 4 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.GroupNorm(groups, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.GroupNorm(groups, cout),
        nn.SiLU(),
    )


class SmallUNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int = 1, width: int = 16, levels: int = 3):
        super().__init__()
        chans = [width * 2**i for i in range(levels)]
        self.down = nn.ModuleList()
        cin = in_channels
        for c in chans:
            self.down.append(_block(cin, c))
            cin = c
        self.up = nn.ModuleList(
            _block(chans[i] + chans[i + 1], chans[i]) for i in range(levels - 1)
        )
        self.head = nn.Conv2d(chans[0], out_channels, 1)
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else nn.functional.avg_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            skip = skips.pop()
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)


class SmallCNN(nn.Module):
    """Logits (B,) with ``outputs=1``, else (B, outputs)."""

    def __init__(self, in_channels: int, width: int = 16, levels: int = 3, outputs: int = 1):
        super().__init__()
        layers, cin = [], in_channels
        for i in range(levels):
            c = width * 2**i
            layers += [_block(cin, c), nn.MaxPool2d(2)]
            cin = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, outputs)
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.features(x).mean(dim=(2, 3)))
        return y.squeeze(1) if self.outputs == 1 else y


def input_channels(wrapped: bool, channels: int = 1) -> int:
    return channels * (2 if wrapped else 1) + 1


def build(
    arch: str, wrapped: bool, width: int = 16, levels: int = 3, channels: int = 1, outputs: int = 1
) -> nn.Module:
    """The network ``arch`` (``unet``, ``cnn``, ``classifier`` or ``segmenter`` of ``outputs``
    classes) for
    wrapped or other inputs of ``channels`` channels."""
    cin = input_channels(wrapped, channels)
    if arch == "unet":
        return SmallUNet(cin, 1, width, levels)
    if arch == "cnn":
        return SmallCNN(cin, width, levels)
    if arch == "classifier":
        return SmallCNN(cin, width, levels, outputs)
    if arch == "segmenter":  # one logit per class and pixel
        return SmallUNet(cin, outputs, width, levels)
    raise ValueError(f"unknown downstream network '{arch}'; expected one of {', '.join(ARCHS)}")


def encode(x: torch.Tensor, wrapped: bool, scale: float = 1.0) -> torch.Tensor:
    """(B, 1, H, W) phase with NaN where there is no data -> network input (module docstring)."""
    valid = torch.isfinite(x)
    v = torch.where(valid, x, torch.zeros_like(x))
    m = valid.to(x.dtype)
    if wrapped:
        return torch.cat([torch.cos(v) * m, torch.sin(v) * m, m], dim=1)
    return torch.cat([v / scale, m], dim=1)


def encode_channels(
    x: torch.Tensor, wrapped: bool, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """(B, C, H, W) with NaN where there is no data -> network input: ``(x - mean) / std`` per
    channel (``mean``, ``std`` of shape (C,)), or ``cos, sin`` of each channel of wrapped phase,
    0 where there is no data, then the mask of pixels valid in every channel."""
    valid = torch.isfinite(x)
    v = torch.where(valid, x, torch.zeros_like(x))
    m = valid.all(dim=1, keepdim=True).to(x.dtype)
    if wrapped:
        parts = [torch.cos(v) * m, torch.sin(v) * m]
    else:
        mean = mean.to(x).view(1, -1, 1, 1)
        std = std.to(x).view(1, -1, 1, 1)
        parts = [(v - mean) / std * m]
    return torch.cat([*parts, m], dim=1)


TASK_FILE = "task.json"
WEIGHTS_FILE = "model.safetensors"


def save_task(model: nn.Module, meta: dict, out) -> None:
    """Weights (safetensors) and ``task.json`` into the directory ``out`` (replaced whole: the
    new one is written beside it and renamed into place)."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from radardiff._files import replace_dir
    from radardiff.errors import DiskFullError, is_disk_full

    def write(tmp: Path) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / TASK_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")

    try:
        replace_dir(Path(out), write)
    except OSError as err:
        if is_disk_full(err):
            raise DiskFullError(f"{out}: disk full while writing the network") from None
        raise


def load_task(path) -> tuple[nn.Module, dict]:
    """A network saved by :func:`save_task` and its ``task.json``, on the CPU, in eval mode."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    from radardiff.errors import RunDirError

    path = Path(path)
    try:
        meta = json.loads((path / TASK_FILE).read_text(encoding="utf-8"))
        net = build(meta["arch"], meta["wrapped"], meta["width"], meta["levels"],
                    meta.get("channels", 1), len(meta.get("classes") or [None]))  # fmt: skip
        net.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunDirError(f"{path}: not a trained downstream network ({msg})") from None
    return net.eval(), meta
