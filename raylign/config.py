"""Typed recipe configs: YAML files under jobs/ plus `a.b=value` overrides.

Every recipe config derives from `StrictModel`, so an unknown or misspelled key is
an error that names the key instead of being silently ignored.
"""

from __future__ import annotations

import copy
import importlib
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Iterable, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

T = TypeVar("T", bound="StrictModel")


class ConfigError(ValueError):
    """A recipe could not be loaded; the message names the offending key."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())
    # old dotted key -> its new home, read for one release (see `apply_renames`)
    renamed_keys: ClassVar[dict] = {}

    @model_validator(mode="before")
    @classmethod
    def _sections_over_their_defaults(cls, data):
        """A section given as a dict is laid over the section's default here, as a recipe file's
        is (`load_config`), so `TrainerConfig(optim={"lr": 1e-4})` keeps the trainer's schedule."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for name, field in cls.model_fields.items():
            if isinstance(merged.get(name), dict) and isinstance(field.default, BaseModel):
                merged[name] = deep_merge(field.default.model_dump(), merged[name])
        return merged


class Check:
    """Marks a recipe field for `raylign.preflight`: what its value must be before a run starts."""

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self) -> str:
        return f"Check({self.kind!r})"


class Registry(dict):
    """Name -> function, for a setting that picks one by name (an advantage estimator, a policy
    loss): `@registry.register("name")` adds one; `registry.setting` is the config field type that
    accepts only registered names, so a typo fails when the recipe loads, naming the choices."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what
        self.setting = Annotated[str, AfterValidator(self._known)]

    def register(self, name: str):
        def add(function):
            if name in self:
                raise ValueError(f"{self.what} '{name}' is registered twice")
            self[name] = function
            return function

        return add

    def pick(self, name: str):
        if name not in self:
            raise ValueError(f"unknown {self.what} '{name}' (choose from {', '.join(self)})")
        return self[name]

    def _known(self, name: str) -> str:
        self.pick(name)
        return name


ModelName = Annotated[str, Check("model")]  # a local HF directory or a name this install resolves
InputPath = Annotated[str, Check("input")]  # a file (or datasets folder) that must exist and be readable
OutputDir = Annotated[str, Check("output_dir")]  # a folder that can be created and written
OutputFile = Annotated[str, Check("output_file")]  # a file whose folder can be created and written
RayAddress = Annotated[str, Check("ray_address")]  # a Ray cluster to join: it must answer
# How a conversation becomes text (raylign.models.chat): the tokenizer's chat template, or
# LMFlow's HH markers "###Human: ...###Assistant: ..."
PromptFormat = Literal["chat", "hh_markers"]


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
        elif isinstance(err.get("input"), dict):
            # a check across a section's settings: its message names them; the section's every
            # value echoed after it would bury that
            lines.append(f"key '{key}': {err['msg']}" if key else err["msg"])
        else:
            lines.append(f"key '{key}': {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


def build_config(model: type[T], tree: dict, source: str = "config") -> T:
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_describe(err)}") from None


class Retired:
    """A renamed key's target when the old key is no longer read at all (why, for the warning)."""

    def __init__(self, reason: str):
        self.reason = reason


# old dotted key -> new dotted key, Retired(why), or a function of the old value giving
# {new dotted key: value}; a recipe class lists its own as the ClassVar `renamed_keys`
Renames = dict[str, "str | Retired | Any"]


def _pop_dotted(tree: dict, dotted: str) -> tuple[bool, Any]:
    *parents, last = dotted.split(".")
    node = tree
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return False, None
    if last not in node:
        return False, None
    return True, node.pop(last)


def _get_dotted(tree: dict, dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def apply_renames(tree: dict, renamed: Renames, source: str) -> list[str]:
    """Move keys a recipe still uses under an old name to their new home, for one release, and
    return the deprecation lines to print. When both are set, the new key wins."""
    lines = []
    for old, new in renamed.items():
        found, value = _pop_dotted(tree, old)
        if not found:
            continue
        if isinstance(new, Retired):
            lines.append(f"'{old}' is no longer read: {new.reason}; remove it")
            continue
        moves = new(value) if callable(new) else {new: value}
        names = ", ".join(f"'{key}'" for key in moves)
        for key, moved in moves.items():
            present, current = _get_dotted(tree, key)
            if present and current != moved:
                lines.append(f"'{old}' is ignored: {names} is set (the old key is read for one release only)")
                break
        else:
            for key, moved in moves.items():
                _set_dotted(tree, key, moved)
            lines.append(f"'{old}' is deprecated: use {names} (the old key is read for one release only)")
    return [f"{source}: {line}" for line in lines]


def load_config(model: type[T], path: str | Path | None, overrides: Iterable[str] = ()) -> T:
    """Load a YAML recipe (or defaults when path is None) and validate it.

    The recipe and the overrides are laid over the config's own defaults section by
    section, so `sampling.max_new_tokens=16` changes that one key and keeps the other
    defaults a recipe class sets for `sampling`. Keys the class lists as renamed
    (`renamed_keys`) move to their new home with a deprecation line on stderr.
    """
    tree: dict = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"recipe file not found: {path}")
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a recipe file (.yaml)")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{path}: cannot be read ({err})") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        source = str(path)
    apply_overrides(tree, overrides)
    return config_from_tree(model, tree, source)


def config_from_tree(model: type[T], tree: dict, source: str = "config") -> T:
    """A config from a tree of settings (what a YAML file gives), laid over the class's defaults;
    renamed keys move to their new home with a deprecation line on stderr."""
    tree = copy.deepcopy(tree)
    for line in apply_renames(tree, model.renamed_keys, source):
        print(f"raylign: {line}", file=sys.stderr, flush=True)
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


def load_callable(spec: str) -> Callable:
    """The function a setting names as "module:callable" (a reward function, a verifier check)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:callable', got '{spec}'")
    try:
        target = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"'{spec}': cannot import module '{module_name}': {err}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"'{spec}': '{module_name}' has no attribute '{attr}'")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"'{spec}' is not callable")
    return target
