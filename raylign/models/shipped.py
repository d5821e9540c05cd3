"""Shipped reward models: a small weight delta in the package, a full HF directory on first use.

A trained 135M reward model is ~540 MB; only the part training changed (the top blocks,
final norm and scalar head, or a merged LoRA) differs from the base model. That delta
is stored as safetensors under raylign/assets/ (float16 differences, or LoRA factors), and `resolve_reward_model`
rebuilds the full `AutoModelForSequenceClassification` directory in the raylign cache
the first time a name such as `hh-rm-smollm2` is used (like the default model itself), through
`raylign.models.registry.resolve_model`, the one place a model name becomes a directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from raylign.models.local import ModelNotFoundError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHIPPED = {
    "hh-rm-smollm2": ASSETS / "rm_hh_smollm2.safetensors",  # harmlessness (HH-RLHF harmless-base)
    "alpaca-rm-smollm2": ASSETS / "rm_alpaca_smollm2.safetensors",  # helpfulness (AlpacaEval GPT-4 pairs)
}
FORMAT = "raylign-rm-delta-v1"


def _state_dict(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    if not tensors:
        raise ModelNotFoundError(f"{model_dir}: no *.safetensors weights")
    return tensors


def _lora_factors(trained_dir: Path) -> tuple[dict, float]:
    """{base weight key: (A, B)} and the scaling of a LoRA run's saved adapter (adapter/)."""
    from safetensors.torch import load_file

    adapter = Path(trained_dir) / "adapter"
    if not (adapter / "adapter_config.json").exists():
        return {}, 0.0
    settings = json.loads((adapter / "adapter_config.json").read_text())
    rank, alpha = settings["r"], settings["lora_alpha"]
    scaling = alpha / (rank**0.5) if settings.get("use_rslora") else alpha / rank
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    factors: dict = {}
    for key, value in tensors.items():
        if ".lora_A." not in key:
            continue
        # base_model.model.<module>.lora_A.weight -> <module>.weight
        module = key.split(".lora_A.")[0].removeprefix("base_model.model.")
        factors[module + ".weight"] = (value, tensors[key.replace(".lora_A.", ".lora_B.")])
    return factors, scaling


def export_delta(trained_dir: Path, base_dir: Path, out_file: Path, max_length: int, base_name: str | None = None,
                 prompt_format: str = "chat") -> dict:
    """Write what training changed relative to the base model, with the metadata to rebuild:
    LoRA factors where the run was LoRA (`KEY.lora_A`, `KEY.lora_B`, merged as
    scaling*B@A), float16 differences for other changed tensors, new tensors (the
    scalar head) in full float32."""
    import torch
    from safetensors.torch import save_file

    trained, base = _state_dict(trained_dir), _state_dict(base_dir)
    factors, scaling = _lora_factors(trained_dir)
    delta, changed = {}, 0
    for key, value in trained.items():
        if key not in base:
            delta[key] = value.float().contiguous()
        elif key in factors:
            delta[key + ".lora_A"], delta[key + ".lora_B"] = (t.float().contiguous() for t in factors[key])
            changed += 1
        elif not torch.equal(value, base[key]):
            diff = (value.float() - base[key].float()).half()
            if not torch.isfinite(diff).all():
                raise ValueError(f"{key}: the weight delta overflows float16")
            delta[key] = diff.contiguous()
            changed += 1
    config = json.loads((Path(trained_dir) / "config.json").read_text())
    metadata = {
        "format": FORMAT,
        "base_model": base_name or Path(base_dir).name,
        "pad_token_id": str(config.get("pad_token_id")),
        "max_length": str(max_length),
        "lora_scaling": str(scaling),
        "prompt_format": prompt_format,  # rebuilt into raylign_rm.json: scorers read pairs as training did
    }
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(delta, str(out_file), metadata=metadata)
    return {"tensors": len(delta), "changed": changed, "bytes": out_file.stat().st_size}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def delta_metadata(delta_file: Path) -> dict:
    """The metadata a delta file carries (its format and the base model it applies to)."""
    from safetensors import safe_open

    with safe_open(str(delta_file), "pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != FORMAT:
        raise ModelNotFoundError(f"{delta_file}: not a raylign reward-model delta (format {metadata.get('format')!r})")
    return metadata


def materialize(delta_file: Path, target: Path, base_dir: Path) -> Path:
    """Base model + delta -> a full HF reward-model directory at `target`."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForSequenceClassification

    from raylign.models.chat import load_tokenizer

    metadata = delta_metadata(delta_file)
    with safe_open(str(delta_file), "pt") as handle:
        delta = {key: handle.get_tensor(key) for key in handle.keys()}
    model = AutoModelForSequenceClassification.from_pretrained(str(base_dir), num_labels=1, dtype=torch.float32)
    state = model.state_dict()
    targets = {key.removesuffix(".lora_A").removesuffix(".lora_B") for key in delta}
    unknown = sorted(targets - set(state))
    if unknown:
        raise ModelNotFoundError(f"{delta_file}: tensors {unknown[:3]} do not exist in {base_dir}")
    scaling = float(metadata.get("lora_scaling") or 0.0)
    with torch.no_grad():
        for key, value in delta.items():
            if key.endswith(".lora_B"):
                continue
            if key.endswith(".lora_A"):
                weight_key = key.removesuffix(".lora_A")
                state[weight_key].add_(scaling * (delta[weight_key + ".lora_B"] @ value))
            elif value.dtype == torch.float16:
                state[key].add_(value.float())
            else:
                state[key].copy_(value)
    tokenizer = load_tokenizer(str(base_dir))
    model.config.pad_token_id = int(metadata.get("pad_token_id") or tokenizer.pad_token_id)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "raylign_rm.json").write_text(json.dumps({**metadata, "delta_sha256": sha256_of(delta_file)}))
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def is_current(target: Path, delta_file: Path) -> bool:
    info = target / "raylign_rm.json"
    if not (target / "config.json").exists() or not info.exists():
        return False
    return json.loads(info.read_text()).get("delta_sha256") == sha256_of(delta_file)
