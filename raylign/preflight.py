"""Everything that can be wrong with a command's inputs, found before Ray or a model starts.

Every command calls these on its validated recipe or its arguments: `check_config` walks a
recipe and checks each field marked in `raylign.config` (`ModelName`, `InputPath`, `OutputDir`,
`OutputFile`); the data, reward and CPU checks take the sections a run reads. A problem is one
line that names the setting (`engine.output_dir`, `--model`) and what to do; the CLI prints it
and exits with 2, and nothing has started yet, so nothing is lost.
"""

from __future__ import annotations

import os
import sys
import tempfile
import typing
from pathlib import Path

from pydantic import BaseModel

from raylign.config import Check, ConfigError
from raylign.data.readers import DataError


def check_model(name: str | None, setting: str) -> Path:
    """A model name or path that resolves to a local HF directory (a shipped reward model is
    built into the cache now, not minutes into the run)."""
    from raylign.models.local import ModelNotFoundError
    from raylign.models.registry import resolve_model

    try:
        return resolve_model(name)
    except ModelNotFoundError as err:
        raise ConfigError(f"{setting}: {err}") from None


def check_named_models(items: list[str]) -> dict[str, str]:
    """`NAME=PATH` arguments (the policies a report compares, the first being the start) as a
    dict, each model found before anything starts."""
    named = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"'{item}': a policy must be given as NAME=PATH (e.g. start=SmolLM2-135M-Instruct)")
        check_model(path, f"policy '{name}'")
        named[name] = path
    return named


def check_input(path: str, setting: str) -> Path:
    """A file or folder that exists and can be read."""
    if not path:
        raise ConfigError(f"{setting}: required (a file path)")
    found = Path(path).expanduser()
    if not found.exists():
        raise ConfigError(f"{setting}: {found} does not exist")
    if not os.access(found, os.R_OK):
        raise ConfigError(f"{setting}: {found} cannot be read (permissions)")
    return found


def check_output_dir(path: str, setting: str) -> Path:
    """A folder that exists or can be made, and can be written (made now, empty if new)."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{setting}: {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(f"{setting}: cannot create or write the folder {folder} ({err.strerror or err})") from None
    return folder


def check_output_file(path: str, setting: str) -> Path:
    """A file that can be written: not a folder, in a folder that can be made and written."""
    target = Path(path).expanduser()
    if target.is_dir():
        raise ConfigError(f"{setting}: {target} is a folder; give a file name")
    check_output_dir(str(target.parent), setting)
    return target


def check_ray_address(address: str, setting: str) -> None:
    """A cluster to join answers on its port (`auto`, `local` and a missing port are Ray's to resolve)."""
    import socket

    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    if address in ("auto", "local") or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as err:
        raise ConfigError(f"{setting}: no Ray cluster answers at {host_port} ({err.strerror or err}); "
                          "start one (`ray start --head`) or leave it unset for a local one") from None


CHECKS = {"model": check_model, "input": check_input, "output_dir": check_output_dir,
          "output_file": check_output_file, "ray_address": check_ray_address}
REQUIRED = ("output_dir", "output_file")  # kinds an empty value cannot satisfy


def _marks(annotation) -> list[str]:
    """The `Check` kinds on a field's type, looking inside `X | None`."""
    if typing.get_origin(annotation) is typing.Annotated:
        return [m.kind for m in annotation.__metadata__ if isinstance(m, Check)]
    return [kind for arg in typing.get_args(annotation) for kind in _marks(arg)]


def check_config(config: BaseModel, prefix: str = "") -> None:
    """Run the check of every marked field of a recipe (and of its sections, lists and maps), naming it."""
    for name, field in type(config).model_fields.items():
        kinds = [m.kind for m in field.metadata if isinstance(m, Check)] or _marks(field.annotation)
        _check_value(getattr(config, name), f"{prefix}{name}", kinds)


def _check_value(value, setting: str, kinds: list[str]) -> None:
    if isinstance(value, BaseModel):
        check_config(value, f"{setting}.")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_value(item, f"{setting}[{index}]", kinds)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_value(item, f"{setting}.{key}", kinds)
    else:
        for kind in kinds:
            if value == "" and kind in REQUIRED:
                raise ConfigError(f"{setting}: required (an empty path would write into the current folder)")
            if value not in (None, ""):
                CHECKS[kind](value, setting)


def check_data(data, kind: str, setting: str = "data") -> str:
    """The data file exists, its format is known and its first records give `kind` rows; returns
    the format (resolved from `auto`), so every reader uses the adapter the file starts with."""
    from raylign.data.adapters import check_source

    if not data.path:
        raise ConfigError(f"{setting}.path: required (a .jsonl[.gz], .json, .parquet file or a datasets folder)")
    try:
        return check_source(data.path, kind, data.format, data.on_error)
    except DataError as err:
        raise DataError(f"{setting}: {err}") from None


def check_reward(reward, setting: str = "reward") -> None:
    """The reward source exists: a model is resolvable, a URL given, a function importable."""
    if reward.kind == "actor":
        if not reward.model:
            raise ConfigError(f"{setting}.model: required for {setting}.kind 'actor' (a path or a shipped name "
                              "like hh-rm-smollm2)")
        check_model(reward.model, f"{setting}.model")
    elif reward.kind == "http" and not reward.url:
        raise ConfigError(f"{setting}.url: required for {setting}.kind 'http' (e.g. http://127.0.0.1:8000)")
    elif reward.kind == "function":
        from raylign.config import load_callable

        try:  # the same import the reward source does, so a typo fails here, not in a worker
            load_callable(reward.function or "")
        except ValueError as err:
            raise ConfigError(f"{setting}.function: {err}") from None
    elif reward.kind == "verifier":
        from raylign.scoring.verifiers import check_function

        for name in reward.verifier.checks:
            try:
                check_function(name)
            except ValueError as err:
                raise ConfigError(f"{setting}.verifier.checks: {err}") from None
    elif reward.kind == "mix":
        if not reward.mix:
            raise ConfigError(f"{setting}.mix: required for {setting}.kind 'mix' (a list of {{weight, source}})")
        for index, part in enumerate(reward.mix):
            check_reward(part.source, f"{setting}.mix[{index}].source")


STREAM_CPUS = 0.05  # the Ray Data stages of a rollout stream (fetch, sample, score: token CPUs)


def _local_resources(ray_address: str | None) -> dict[str, float] | None:
    """CPUs and GPUs of the cluster a run will use, when that is the local one (None for a
    cluster given by address or RAY_ADDRESS: not known before joining it)."""
    if ray_address or os.environ.get("RAY_ADDRESS"):
        return None
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        resources = ray.cluster_resources()
        return {"CPU": float(resources.get("CPU", 0.0)), "GPU": float(resources.get("GPU", 0.0))}
    torch = sys.modules.get("torch")
    gpus = torch.cuda.device_count() if torch is not None and torch.cuda.is_available() else 0
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}


def check_resources(cpus: dict[str, float], gpus: dict[str, float], ray_address: str | None) -> None:
    """The roles' CPU and GPU requests fit the local Ray cluster (otherwise Ray waits for them
    forever, with no error)."""
    have = _local_resources(ray_address)
    if have is None:
        return
    for kind, demand in (("CPU", cpus), ("GPU", gpus)):
        asked = sum(demand.values())
        if asked > have[kind] + 1e-9:
            parts = ", ".join(f"{k} {v:g}" for k, v in demand.items() if v)
            raise ConfigError(f"the run asks for {asked:g} {kind}s ({parts}) but the local Ray cluster has "
                              f"{have[kind]:g}: lower those settings" + (" (fractions such as 0.25 work)"
                                                                          if kind == "CPU" else ""))


def check_stage_cpus(demand: dict[str, float], ray_address: str | None) -> None:
    """Actors a method's Ray Data stages hold (DPO's reference pool) leave a CPU for the tasks that
    read and tokenise their input; otherwise Ray Data waits forever."""
    have = _local_resources(ray_address)
    held = sum(demand.values())
    if have is not None and have["CPU"] - held < 1:
        parts = ", ".join(f"{k} {v:g}" for k, v in demand.items() if v)
        raise ConfigError(f"{parts} CPUs leave none of the local cluster's {have['CPU']:g} for the tasks that feed "
                          "them (Ray Data would wait forever): reserve fewer CPUs and set reference.threads instead")


def check_installed(module: str, setting: str, how: str) -> None:
    """A package a setting needs is importable here (vLLM for `sampling.backend: vllm`, ...)."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{setting} needs the '{module}' package, which is not installed: {how}")


def check_top_layers(model: str, top_layers: int, setting: str) -> None:
    """`top_layers` is at most the model's number of blocks (read from its config.json)."""
    import json

    config_file = check_model(model, "model") / "config.json"
    blocks = json.loads(config_file.read_text()).get("num_hidden_layers")
    if isinstance(blocks, int) and top_layers > blocks:
        raise ConfigError(f"{setting}={top_layers} but {model} has {blocks} blocks")


def check_args(args, models: tuple[str, ...] = (), inputs: tuple[str, ...] = (),
               outputs: tuple[str, ...] = ()) -> None:
    """The same checks for a command's arguments (argparse dests; a list checks each item)."""
    for kind, dests in (("model", models), ("input", inputs), ("output_file", outputs)):
        for dest in dests:
            value = getattr(args, dest, None)
            for item in value if isinstance(value, list) else [value]:
                if item not in (None, ""):
                    CHECKS[kind](item, f"--{dest.replace('_', '-')}")
