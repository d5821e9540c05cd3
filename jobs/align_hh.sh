#!/usr/bin/env bash
# The "It aligns" table: each online method's CPU recipe on HH-RLHF train-split prompts, then
# one `raylign eval compare` on held-out HH test prompts (never trained on by the policies or
# by the reward model): reward under hh-rm-smollm2 (what the methods optimise), the starting
# model's perplexity of the responses (fluency), and the win rate against the starting
# policy under a second judge the policies never saw: a second HH reward model
# (jobs/rm_hh_judge.yaml, trained here first when missing, ~25 min), since the SmolLM2 LLM
# judge only picks whichever answer is shown first on these prompts.
#   JUDGE=judge:SmolLM2-135M-Instruct bash jobs/align_hh.sh   (any other annotator spec)
#   bash jobs/align_hh.sh                      (20-30 min a method on 2 CPU cores)
#   METHODS="grpo raft" bash jobs/align_hh.sh  (a subset; the compare step uses what exists)
#   EVAL_DATA=path/to/other_prompts.jsonl bash jobs/align_hh.sh   (held-out prompts of your own)
set -euo pipefail
cd "$(dirname "$0")/.."
RAYLIGN=${RAYLIGN:-.venv/bin/raylign}
METHODS=${METHODS:-"rrhf raft grpo online_dpo ppo quark"}
EVAL_DATA=${EVAL_DATA:-../shared/data/hh_rlhf_harmless.jsonl.gz}
[ -e "$EVAL_DATA" ] || EVAL_DATA=raylign/assets/hh_rlhf_harmless_sample.jsonl.gz
JUDGE=${JUDGE:-rm:runs/rm_hh_judge}
mkdir -p runs/logs
if [ "$JUDGE" = "rm:runs/rm_hh_judge" ] && [ ! -f runs/rm_hh_judge/config.json ]; then
  "$RAYLIGN" train rm --config jobs/rm_hh_judge.yaml 2>&1 | tee runs/logs/rm_hh_judge.log | grep -E "^\[rm\]" || true
fi
for method in $METHODS; do
  if [ ! -f "runs/${method}_hh/final/config.json" ]; then
    "$RAYLIGN" train "${method//_/-}" --config "jobs/${method}_hh.yaml" 2>&1 | tee "runs/logs/${method}_hh.log" | grep -E "^\[raylign\]|step|final policy" || true
  fi
done
policies=(start=SmolLM2-135M-Instruct)
for method in rrhf raft grpo online_dpo ppo quark; do
  [ -f "runs/${method}_hh/final/config.json" ] && policies+=("${method}=runs/${method}_hh/final")
done
"$RAYLIGN" eval compare "${policies[@]}" --data "$EVAL_DATA" --split test --limit "${LIMIT:-64}" \
  --judge "$JUDGE" --output runs/compare/align_hh.json
