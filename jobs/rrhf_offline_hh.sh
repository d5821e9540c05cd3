#!/usr/bin/env bash
# Offline RRHF on HH-RLHF, the paper's way, in one command (each step skipped when its output exists):
#   1. the default model answers 400 train-split prompts 4 times       (generate samples)
#   2. + the dataset's chosen/rejected, ranked by hh-rm-smollm2          (annotate rank, a Ray Data job)
#   3. RRHF's ranking + SFT loss on the ranked file                       (train rrhf-offline)
#   4. held-out HH test prompts: reward, reference PPL, second-RM judge   (eval compare; beside online RRHF when trained)
#   bash jobs/rrhf_offline_hh.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RAYLIGN=${RAYLIGN:-.venv/bin/raylign}
OUT=runs/rrhf_offline_hh
mkdir -p "$OUT"
[ -f "$OUT/samples.json" ] || "$RAYLIGN" generate samples --config jobs/generate_hh_samples.yaml output="$OUT/samples.json"
[ -f "$OUT/ranked.jsonl" ] || "$RAYLIGN" annotate rank --prompts ../shared/data/hh_rlhf_harmless.jsonl.gz --split train \
  --limit 400 --samples "$OUT/samples.json" --dataset-responses --annotator rm:hh-rm-smollm2 --output "$OUT/ranked.jsonl"
[ -f "$OUT/policy/config.json" ] || "$RAYLIGN" train rrhf-offline --config jobs/rrhf_offline_hh.yaml
policies=(start=SmolLM2-135M-Instruct rrhf_offline="$OUT/policy")
[ -f runs/rrhf_hh/final/config.json ] && policies+=(rrhf_online=runs/rrhf_hh/final)
# the judge: the second HH reward model when trained (jobs/rm_hh_judge.yaml), else the shipped
# helpfulness RM (AlpacaEval GPT-4 labels), which shares no training label with hh-rm-smollm2
JUDGE=${JUDGE:-rm:runs/rm_hh_judge}
[ "$JUDGE" != rm:runs/rm_hh_judge ] || [ -f runs/rm_hh_judge/config.json ] || JUDGE=rm:alpaca-rm-smollm2
"$RAYLIGN" eval compare "${policies[@]}" --data ../shared/data/hh_rlhf_harmless.jsonl.gz --split test --limit "${LIMIT:-64}" \
  --judge "$JUDGE" --output "$OUT/compare.json"
