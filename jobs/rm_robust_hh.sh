#!/usr/bin/env bash
# Reward models that hold up under optimisation, on HH-RLHF, in one command (each step skipped
# when its output exists):
#   1. the hack suite and held-out accuracy of the shipped hh-rm-smollm2        (eval hacks, eval rm)
#   2. the hack-aware RM (jobs/rm_hh_hack_aware.yaml) and the 3-member ensemble (jobs/rm_hh_ensemble.yaml),
#      each measured the same way
#   3. GRPO (jobs/grpo_hh.yaml) against $ROBUST_RM (default: the hack-aware RM), beside GRPO against
#      hh-rm-smollm2, compared on held-out HH test prompts under a judge that shares no training label
#      with either RM (alpaca-rm-smollm2, trained on AlpacaEval GPT-4 labels), with reward under both
#      RMs, reference PPL, rep-4 and stop rate
#   bash jobs/rm_robust_hh.sh                (about 2.5 h on a 2-core CPU; STEPS="hacks" runs only step 1)
set -euo pipefail
cd "$(dirname "$0")/.."
RAYLIGN=${RAYLIGN:-.venv/bin/raylign}
OUT=runs/robust
DATA=../shared/data/hh_rlhf_harmless.jsonl.gz
STEPS=${STEPS:-"hacks train grpo"}
ROBUST_RM=${ROBUST_RM:-runs/rm_hh_hack_aware}
JUDGE=${JUDGE:-rm:alpaca-rm-smollm2}
mkdir -p "$OUT"
measure() {  # name model
  [ -f "$OUT/hacks_$1.json" ] || "$RAYLIGN" eval hacks --model "$2" --data "$DATA" --on-error skip --split test \
    --limit 200 --output "$OUT/hacks_$1.json"
  [ -f "$OUT/rm_$1.json" ] || "$RAYLIGN" eval rm --model "$2" --data "$DATA" --on-error skip --split test \
    --output "$OUT/rm_$1.json"
}
[[ " $STEPS " == *" hacks "* ]] && measure hh-rm hh-rm-smollm2
if [[ " $STEPS " == *" train "* ]]; then
  [ -f runs/rm_hh_hack_aware/config.json ] || "$RAYLIGN" train rm --config jobs/rm_hh_hack_aware.yaml
  measure hack_aware runs/rm_hh_hack_aware
  [ -f runs/rm_hh_ensemble/raylign_ensemble.json ] || "$RAYLIGN" train rm --config jobs/rm_hh_ensemble.yaml
  measure ensemble runs/rm_hh_ensemble
fi
if [[ " $STEPS " == *" grpo "* ]]; then
  [ -f runs/grpo_hh/final/config.json ] || "$RAYLIGN" train grpo --config jobs/grpo_hh.yaml
  [ -f runs/grpo_hh_robust/final/config.json ] || "$RAYLIGN" train grpo --config jobs/grpo_hh.yaml \
    reward.model="$ROBUST_RM" engine.output_dir=runs/grpo_hh_robust
  for rm in hh-rm-smollm2 "$ROBUST_RM"; do
    "$RAYLIGN" eval compare start=SmolLM2-135M-Instruct grpo=runs/grpo_hh/final grpo_robust=runs/grpo_hh_robust/final \
      --data "$DATA" --split test --limit 64 --reward-model "$rm" --judge "$JUDGE" \
      --output "$OUT/compare_$(basename "$rm").json"
  done
fi
