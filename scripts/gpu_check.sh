#!/usr/bin/env bash
# The GPU checks (tests/gpu), as run on a one-GPU machine whose Python already has torch
# (CUDA), transformers and tokenizers; wheels for what it lacks (DeepSpeed, Ray, pydantic, ...)
# sit in .whl/ (docs/gpu.md). Extra arguments go to pytest. The log goes to $OUT when set.
set -o pipefail
log=${OUT:-/tmp}/gpu_tests.log
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, deepspeed, ray; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__, 'ray', ray.__version__)"
  python3 -m pytest tests/gpu -v -rA -p no:cacheprovider --durations=20 -o timeout=400 "$@"
} 2>&1 | tee "$log"
