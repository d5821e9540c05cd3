#!/usr/bin/env bash
# Reward models that hold up under optimisation, on HH-RLHF, in one command (each step skipped
# when its output exists, so a killed run continues where it stopped):
#   hacks    the hack suite and held-out accuracy of the shipped hh-rm-smollm2   (eval hacks, eval rm)
#   train    the hack-aware RM (jobs/rm_hh_hack_aware.yaml) and the 3-member ensemble
#            (jobs/rm_hh_ensemble.yaml), each measured the same way
#   heldout  every RM on hack forms no training family makes (eval hacks --held-out-forms)
#   grpo     GRPO (jobs/grpo_hh.yaml) against $ROBUST_RM, compared with the start on 64 held-out HH
#            test prompts: reward under $ROBUST_RM and under hh-rm-smollm2, win rate under a judge
#            that shares no training label with either (alpaca-rm-smollm2: AlpacaEval GPT-4 labels),
#            reference PPL, rep-4, stop rate; the original GRPO run's stored responses
#            (docs/bench/2026-11-22-align-rerun/align_hh.json) re-judged by the same judge and $ROBUST_RM
#   iterate  the iterative mode: the GRPO policy's samples on train prompts, ranked by $ROBUST_RM,
#            the ones the rules flag as rejected answers (annotate hack-pairs), the RM retrained with
#            them, each ten times, for the whole epoch (runs/rm_hh_hack_aware_2: with early stopping on
#            the 144 plain validation pairs it kept step 40 of 200, before most hack pairs), measured,
#            and GRPO rerun against it
#   budget   GRPO against the round-2 RM (or $BUDGET_RM) inside a KL budget: the k3 coefficient steered each step
#            towards $KL_TARGET nats per response token (grpo.adaptive_kl), compared as above, and the
#            independent judge's own accuracy on the held-out HH pairs
#   bash jobs/rm_robust_hh.sh                (about 4 h on a 2-core CPU; STEPS="hacks" runs only that step)
set -euo pipefail
cd "$(dirname "$0")/.."
RAYLIGN=${RAYLIGN:-.venv/bin/raylign}
OUT=runs/robust
DATA=../shared/data/hh_rlhf_harmless.jsonl.gz
STEPS=${STEPS:-"hacks train heldout grpo iterate budget"}
KL_TARGET=${KL_TARGET:-0.02}
BUDGET_RM=${BUDGET_RM:-runs/rm_hh_hack_aware_2}  # e.g. BUDGET_RM=hh-rm-smollm2 BUDGET_TAG=_hh-rm
BUDGET_TAG=${BUDGET_TAG:-}
ROBUST_RM=${ROBUST_RM:-runs/rm_hh_hack_aware}
JUDGE=${JUDGE:-rm:alpaca-rm-smollm2}
ORIGINAL=${ORIGINAL:-docs/bench/2026-11-22-align-rerun/align_hh.json}
mkdir -p "$OUT"
has() { [[ " $STEPS " == *" $1 "* ]]; }
measure() {  # name model
  [ -f "$OUT/hacks_$1.json" ] || "$RAYLIGN" eval hacks --model "$2" --data "$DATA" --on-error skip --split test \
    --limit 200 --output "$OUT/hacks_$1.json"
  [ -f "$OUT/rm_$1.json" ] || "$RAYLIGN" eval rm --model "$2" --data "$DATA" --on-error skip --split test \
    --output "$OUT/rm_$1.json"
}
heldout() {  # name model: the hack forms no training family makes
  [ -f "$OUT/heldout_$1.json" ] || "$RAYLIGN" eval hacks --model "$2" --data "$DATA" --on-error skip --split test \
    --limit 200 --held-out-forms --output "$OUT/heldout_$1.json"
}
grpo_against() {  # reward-model run-dir name [more train grpo overrides]
  [ -f "$2/final/config.json" ] || "$RAYLIGN" train grpo --config jobs/grpo_hh.yaml reward.model="$1" engine.output_dir="$2" \
    "${@:4}"
  [ -f "$OUT/compare_$3.json" ] || "$RAYLIGN" eval compare start=SmolLM2-135M-Instruct "$3=$2/final" --data "$DATA" \
    --split test --limit 64 --reward-model "$1" --judge "$JUDGE" --output "$OUT/compare_$3.json"
  [ -f "$OUT/compare_$3.hh-rm.json" ] || "$RAYLIGN" eval rejudge "$OUT/compare_$3.json" --judge rm:hh-rm-smollm2 \
    --output "$OUT/compare_$3.hh-rm.json"
}
has hacks && measure hh-rm hh-rm-smollm2
if has train; then
  [ -f runs/rm_hh_hack_aware/config.json ] || "$RAYLIGN" train rm --config jobs/rm_hh_hack_aware.yaml
  measure hack_aware runs/rm_hh_hack_aware
  [ -f runs/rm_hh_ensemble/raylign_ensemble.json ] || "$RAYLIGN" train rm --config jobs/rm_hh_ensemble.yaml
  measure ensemble runs/rm_hh_ensemble
fi
if has heldout; then
  heldout hh-rm hh-rm-smollm2
  heldout hack_aware runs/rm_hh_hack_aware
  heldout ensemble runs/rm_hh_ensemble
fi
if has grpo; then
  grpo_against "$ROBUST_RM" runs/grpo_hh_robust grpo_robust
  for judge in "$JUDGE" "rm:$ROBUST_RM"; do
    name=$(basename "${judge#rm:}")
    [ -f "$OUT/original_grpo.$name.json" ] || "$RAYLIGN" eval rejudge "$ORIGINAL" --judge "$judge" \
      --output "$OUT/original_grpo.$name.json"
  done
fi
if has iterate; then
  P=runs/grpo_hh_robust
  [ -f $P/samples.json ] || "$RAYLIGN" generate samples --config jobs/generate_hh_samples.yaml model=$P/final \
    data.limit=200 output=$P/samples.json
  [ -f $P/ranked.jsonl ] || "$RAYLIGN" annotate rank --prompts "$DATA" --split train --limit 200 \
    --samples $P/samples.json --dataset-responses --annotator "rm:$ROBUST_RM" --output $P/ranked.jsonl
  [ -f $P/hack_pairs.jsonl ] || "$RAYLIGN" annotate hack-pairs --ranked $P/ranked.jsonl --output $P/hack_pairs.jsonl
  [ -f runs/rm_hh_hack_aware_2/config.json ] || "$RAYLIGN" train rm --config jobs/rm_hh_hack_aware.yaml \
    "rm.extra_pairs=[$P/hack_pairs.jsonl]" rm.extra_pairs_repeat=10 \
    early_stop_patience=null keep_best=false eval_every=50 output_dir=runs/rm_hh_hack_aware_2
  grpo_against runs/rm_hh_hack_aware_2 runs/grpo_hh_robust2 grpo_robust2
  measure hack_aware_2 runs/rm_hh_hack_aware_2
  heldout hack_aware_2 runs/rm_hh_hack_aware_2
fi
if has budget; then
  B="budget${BUDGET_TAG}_$KL_TARGET"
  grpo_against "$BUDGET_RM" "runs/grpo_hh_$B" "grpo_$B" \
    grpo.adaptive_kl=true grpo.kl_coef=0.3 grpo.kl_target="$KL_TARGET" grpo.kl_horizon=32
  [ "$BUDGET_RM" = runs/rm_hh_hack_aware_2 ] || [ -f "$OUT/compare_grpo_$B.round2.json" ] || \
    "$RAYLIGN" eval rejudge "$OUT/compare_grpo_$B.json" --judge rm:runs/rm_hh_hack_aware_2 \
    --output "$OUT/compare_grpo_$B.round2.json"
  # how far the independent judge agrees with the HH-harmless labels at all
  [ -f "$OUT/rm_alpaca-rm.json" ] || "$RAYLIGN" eval rm --model "${JUDGE#rm:}" --data "$DATA" --on-error skip \
    --split test --output "$OUT/rm_alpaca-rm.json"
fi
