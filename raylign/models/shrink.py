"""A smaller model cut from a larger one: its bottom N transformer blocks.

ALMoST ranks responses by the size of the model that wrote them; with one model at hand, the
"smaller" generator is that model's bottom blocks. `MODEL@layers=N` names one anywhere a model
goes (`raylign.models.registry.resolve_model` builds it into the model cache on first use);
`raylign model shrink` writes one to a chosen directory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

SHRUNK_NAME = re.compile(r"^(?P<base>.+)@layers=(?P<layers>\d+)$")


def shrink_model(source: str | Path, keep_layers: int, out_dir: str | Path) -> dict:
    """The causal LM at `source` with only its bottom `keep_layers` transformer blocks (the final
    norm and the LM head kept), saved as a plain HF checkpoint. Dropping the top blocks leaves a
    model that still writes text, worse than the whole one: a generator of known lower quality."""
    import torch
    from transformers import AutoModelForCausalLM

    from raylign.models.chat import load_tokenizer
    from raylign.models.trainable import block_list

    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    _, blocks = block_list(model)
    total = len(blocks)
    if not 1 <= keep_layers < total:
        raise ValueError(f"--keep-layers must be between 1 and {total - 1} ({source} has {total} blocks)")
    before = sum(p.numel() for p in model.parameters())
    del blocks[keep_layers:]
    model.config.num_hidden_layers = keep_layers
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = model.config.layer_types[:keep_layers]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(str(source)).save_pretrained(out)
    info = {"source": str(source), "kept_layers": keep_layers, "of_layers": total,
            "parameters": sum(p.numel() for p in model.parameters()), "source_parameters": before}
    (out / "raylign_shrunk.json").write_text(json.dumps(info, indent=1))
    return info


def build_shrunk(base_dir: Path, keep_layers: int, out_dir: Path) -> Path:
    """`shrink_model` into `out_dir` unless it is there, through a temporary directory so two
    processes asking at once never see half a model."""
    import os
    import shutil

    if (out_dir / "config.json").is_file():
        return out_dir
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shrink_model(base_dir, keep_layers, tmp)
    try:
        tmp.rename(out_dir)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
