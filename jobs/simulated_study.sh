#!/usr/bin/env bash
# AlpacaFarm's loop end to end, simulated: the starting policy samples 4 responses per train
# instruction -> a simulated annotator pool (the GPT-4-trained helpfulness reward model, label noise
# p = 0.25) labels every pair -> a reward model is trained on those labels -> best-of-n with it on
# held-out instructions -> leaderboard of the improved policy against the starting one, judged by the
# simulated evaluator (the same annotator without noise, as AlpacaFarm evaluates).
#   bash jobs/simulated_study.sh                 (about 45 min on 2 CPU cores)
#   N=16 TEST_LIMIT=112 bash jobs/simulated_study.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RAYLIGN=${RAYLIGN:-.venv/bin/raylign}
OUT=${OUT:-runs/study}
N=${N:-4}                        # best-of-n on the held-out instructions
TEST_LIMIT=${TEST_LIMIT:-64}     # held-out instructions (112 of the shipped file fall in the test split)
EVALUATOR=${EVALUATOR:-rm:alpaca-rm-smollm2}
mkdir -p "$OUT" runs/logs
step() { echo; echo "[study] $*"; }

step "1/5 samples from the starting policy (train instructions)"
[ -f "$OUT/samples.json" ] || "$RAYLIGN" generate samples --config jobs/study/generate.yaml output="$OUT/samples.json"

step "2/5 simulated preference labels (noisy annotator pool)"
[ -f "$OUT/labels.jsonl" ] || "$RAYLIGN" annotate --config jobs/study/annotate.yaml data="$OUT/samples.json" output="$OUT/labels.jsonl"

step "3/5 reward model on the simulated labels"
[ -f "$OUT/rm/config.json" ] || "$RAYLIGN" train rm --config jobs/study/rm.yaml data.path="$OUT/labels.jsonl" output_dir="$OUT/rm"

step "4/5 best-of-$N with the study's reward model, and the starting policy, on held-out instructions"
held_out=(data.split=test data.limit="$TEST_LIMIT")
[ -f "$OUT/best_of_$N.json" ] || "$RAYLIGN" generate best-of-n --config jobs/study/generate.yaml "${held_out[@]}" \
  sampling.num_samples="$N" reward.model="$OUT/rm" generator="best_of_$N" output="$OUT/best_of_$N.json"
[ -f "$OUT/start.json" ] || "$RAYLIGN" generate outputs --config jobs/study/generate.yaml "${held_out[@]}" \
  sampling.seed=1 generator=start output="$OUT/start.json"

step "5/5 leaderboard: best-of-$N vs the starting policy under the simulated evaluator ($EVALUATOR)"
"$RAYLIGN" eval leaderboard --model-outputs "$OUT/best_of_$N.json" --reference-outputs "$OUT/start.json" \
  --annotator "$EVALUATOR" --output "$OUT/leaderboard.json"

step "fluency: the starting model's perplexity of both outputs files (beside the win rate)"
"$RAYLIGN" eval fluency "$OUT/best_of_$N.json" "$OUT/start.json" --output "$OUT/fluency.json"
