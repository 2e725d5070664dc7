"""Small, standard networks of the downstream reference tasks, and their input encoding.

- :class:`SmallUNet`: a U-Net (Ronneberger et al. 2015) of ``levels`` resolutions, two 3x3
  convolutions with GroupNorm and SiLU per level, average-pool down, nearest up, skip
  concatenation; per-pixel regression (deformation recovery).
- :class:`SmallCNN`: ``levels`` such blocks with 2x2 max-pooling, global average pooling and a
  linear layer to one logit (deformation detection).

Inputs are encoded by :func:`encode`: unwrapped phase as ``(value / scale, valid)``, wrapped
phase as ``(cos, sin, valid)`` (phase is circular: the network never sees the 2 pi jump), with
0 where there is no data and ``valid`` the 0/1 no-data mask.
"""

from __future__ import annotations

import torch
from torch import nn

ARCHS = ("unet", "cnn")


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
    def __init__(self, in_channels: int, width: int = 16, levels: int = 3):
        super().__init__()
        layers, cin = [], in_channels
        for i in range(levels):
            c = width * 2**i
            layers += [_block(cin, c), nn.MaxPool2d(2)]
            cin = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(1)


def input_channels(wrapped: bool) -> int:
    return 3 if wrapped else 2


def build(arch: str, wrapped: bool, width: int = 16, levels: int = 3) -> nn.Module:
    """The network ``arch`` (``unet`` or ``cnn``) for wrapped or unwrapped inputs."""
    cin = input_channels(wrapped)
    if arch == "unet":
        return SmallUNet(cin, 1, width, levels)
    if arch == "cnn":
        return SmallCNN(cin, width, levels)
    raise ValueError(f"unknown downstream network '{arch}'; expected one of {', '.join(ARCHS)}")


def encode(x: torch.Tensor, wrapped: bool, scale: float = 1.0) -> torch.Tensor:
    """(B, 1, H, W) phase with NaN where there is no data -> network input (module docstring)."""
    valid = torch.isfinite(x)
    v = torch.where(valid, x, torch.zeros_like(x))
    m = valid.to(x.dtype)
    if wrapped:
        return torch.cat([torch.cos(v) * m, torch.sin(v) * m, m], dim=1)
    return torch.cat([v / scale, m], dim=1)


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
        net = build(meta["arch"], meta["wrapped"], meta["width"], meta["levels"])
        net.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RunDirError(f"{path}: not a trained downstream network ({msg})") from None
    return net.eval(), meta
