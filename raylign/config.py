"""Typed recipe configs: YAML files under jobs/ plus `a.b=value` overrides.

Every recipe config derives from `StrictModel`, so an unknown or misspelled key is
an error that names the key instead of being silently ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound="StrictModel")


class ConfigError(ValueError):
    """A recipe could not be loaded; the message names the offending key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict, overrides: Iterable[str]) -> dict:
    """Apply `a.b=value` strings; values are parsed as YAML scalars (1, true, [1,2])."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{item}' has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_dotted(tree, key, value)
    return tree


def deep_merge(base: dict, update: dict) -> dict:
    """`update` laid over `base`, section by section (neither is modified)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError) -> str:
    lines = []
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        elif err["type"] == "missing":
            lines.append(f"missing required key '{key}'")
        else:
            lines.append(f"key '{key}': {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


def build_config(model: type[T], tree: dict, source: str = "config") -> T:
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_describe(err)}") from None


def load_config(model: type[T], path: str | Path | None, overrides: Iterable[str] = ()) -> T:
    """Load a YAML recipe (or defaults when path is None) and validate it.

    The recipe and the overrides are laid over the config's own defaults section by
    section, so `sampling.max_new_tokens=16` changes that one key and keeps the other
    defaults a recipe class sets for `sampling`.
    """
    tree: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"recipe file not found: {path}")
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        source = str(path)
    apply_overrides(tree, overrides)
    return build_config(model, deep_merge(_defaults(model), tree), source)


def _defaults(model: type[StrictModel]) -> dict:
    """The config's defaults as a tree, or {} when it has required keys."""
    try:
        return model().model_dump()
    except ValidationError:
        return {}


SECRET_KEYS = ("token", "api_key", "password", "secret")


def redact_secrets(tree):
    """A copy with the values of secret-looking keys (token, api_key, ...) replaced, so a
    recipe can be printed or logged without leaking them."""
    if isinstance(tree, dict):
        return {k: ("***" if v and isinstance(k, str) and k.lower() in SECRET_KEYS else redact_secrets(v))
                for k, v in tree.items()}
    if isinstance(tree, list):
        return [redact_secrets(v) for v in tree]
    return tree


def dump_config(config: BaseModel) -> str:
    """The config as YAML for printing and for the run folder; secrets redacted."""
    return yaml.safe_dump(redact_secrets(config.model_dump(mode="json")), sort_keys=False)
