"""Load, save and override configs (TOML)."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
from pydantic import BaseModel, ValidationError

from radardiff._files import temp_file_for
from radardiff.config.schema import RunConfig
from radardiff.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

# keys renamed since runs were first written with them: (section, old name) -> new name, so that
# the config.toml of an older run still loads (train.conv_weight_grad, of the runs of 2026-12-01
# and 02, became train.conv_kernels when the kernels took the forward pass too)
RENAMED = {("train", "conv_weight_grad"): "conv_kernels"}


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(root)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown config key '{loc}'"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{source}: config key '{loc}': {msg}{shown}"


def valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key that ``model`` accepts, sections expanded."""
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(valid_keys(ann, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _check_unknown_keys(
    data: dict[str, Any], model: type[BaseModel], source: str, prefix=""
) -> None:
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            here = [f"{prefix}{k}" for k in fields]
            raise ConfigError(
                f"{source}: unknown config key '{prefix}{key}'; valid keys here: {', '.join(here)}"
            )
        ann = fields[key].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: config key '{prefix}{key}' must be a table/section")
            _check_unknown_keys(value, ann, source, f"{prefix}{key}.")


def validate_config(data: dict[str, Any], source: str = "config", model: type[M] = RunConfig) -> M:
    """Build a config from plain data, with one-line errors naming the source and key."""
    if model is RunConfig:
        data = _renamed(data)
    _check_unknown_keys(data, model, source)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source)) from None


def _renamed(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the keys of :data:`RENAMED` under their new names (a new name given too wins)."""
    for (section, old), new in RENAMED.items():
        table = data.get(section)
        if isinstance(table, dict) and old in table:
            table = dict(table)
            table.setdefault(new, table.pop(old))
            data = {**data, section: table}
    return data


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> RunConfig:
    """Read a TOML recipe and apply ``section.key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not a valid TOML file ({err})") from None
    data = apply_overrides(data, overrides or [])
    return validate_config(data, str(path))


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word is a string, so --set sample.sampler=ddim works unquoted


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``a.b=c`` overrides applied (values parsed as TOML)."""
    out = _deep_copy(data)
    known = set(valid_keys(RunConfig))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        if key not in known:
            raise ConfigError(
                f"--set {key}: unknown config key; valid keys: {', '.join(sorted(known))}"
            )
        set_dotted(out, key, _parse_value(raw.strip()))
    return out


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """``tree[a][b][c] = value`` for ``key = "a.b.c"``, creating the tables on the way."""
    *parents, leaf = key.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def config_to_dict(config: BaseModel) -> dict[str, Any]:
    """Plain data for TOML: tuples become lists, None values are left out (TOML has no null)."""
    return config.model_dump(mode="json", exclude_none=True)


def dumps_config(config: BaseModel) -> str:
    return tomli_w.dumps(config_to_dict(config))


def save_config(config: BaseModel, path: str | os.PathLike) -> None:
    """Write the config atomically (temporary file, then rename)."""
    atomic_write_text(Path(path), dumps_config(config))


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file_for(path)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
