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
# the judge: a second HH reward model the policies never saw: jobs/rm_hh_judge.yaml's, else LMFlow's
# two-stage one (jobs/rm_hh_lmflow.yaml), else the shipped helpfulness RM (alpaca-rm-smollm2, which
# shares no label with hh-rm-smollm2 but is near chance on harmlessness: a weak judge here)
if [ -z "${JUDGE:-}" ]; then
  JUDGE=rm:alpaca-rm-smollm2
  for rm in runs/rm_hh_lmflow runs/rm_hh_judge; do [ -f "$rm/config.json" ] && JUDGE=rm:$rm; done
fi
"$RAYLIGN" eval compare "${policies[@]}" --data ../shared/data/hh_rlhf_harmless.jsonl.gz --split test --limit "${LIMIT:-64}" \
  --judge "$JUDGE" --output "$OUT/compare.json"
