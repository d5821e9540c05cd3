"""`raylign annotate hack-pairs`: the iterative mode of hack-aware reward-model training.

    raylign generate samples --config jobs/generate_hh_samples.yaml model=runs/grpo_hh/final \
        output=runs/grpo_hh/samples.json
    raylign annotate rank --prompts ../shared/data/hh_rlhf_harmless.jsonl.gz --split train --limit 400 \
        --samples runs/grpo_hh/samples.json --dataset-responses --annotator rm:hh-rm-smollm2 \
        --output runs/grpo_hh/ranked.jsonl
    raylign annotate hack-pairs --ranked runs/grpo_hh/ranked.jsonl --output runs/grpo_hh/hack_pairs.jsonl
    raylign train rm --config jobs/rm_hh_hack_aware.yaml rm.extra_pairs=[runs/grpo_hh/hack_pairs.jsonl]

A finished policy's samples, ranked by the reward model it was trained against, show what the
model rewards. Among each prompt's `--top-k` best-scored responses, the ones the rules below flag
(`hack_flags`) become rejected answers, each against the best-scored response the rules pass
(often the dataset's chosen answer, with `--dataset-responses`). The reward model retrained on
them (`rm.extra_pairs`) has seen its own blind spots as losers.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from raylign.data.readers import DataError, iter_records
from raylign.scoring.text import has_turn_marker

HEDGES = ("interesting question", "many ways to look at", "it depends", "worth considering",
          "let me think about it", "i see what you mean", "hard to say")
# a stock remark about the question, and little else (what GRPO against the hack-aware RM found:
# "That's a tough question.", "That's a pretty tough one.")
REMARK = re.compile(r"\b(that'?s|this is|what) an? (really |pretty |very )?(good|great|tough|interesting|complex|"
                    r"difficult|tricky|hard|bit of a) ?(question|one|topic|call|issue)?\b", re.IGNORECASE)
# the topic handed back as a lone question and nothing else (what GRPO against the second-round
# hack-aware RM found: "You're referring to your car?", opening 62 of its 64 held-out answers)
ECHO_QUESTION = re.compile(r"^\W*((you'?re|you are|are you|were you) (referring|asking|talking) (to|about)"
                           r"|(do|did) you mean\b)", re.IGNORECASE)
APOLOGY = re.compile(r"\b(sorry|apologi[sz]e)", re.IGNORECASE)
SIGN_OFF = re.compile(r"let me know if you have any (other )?questions", re.IGNORECASE)


def _sentences(text: str) -> list[str]:
    return [s.strip().lower() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 3]


def repeated_ngram_share(words: list[str], n: int = 4) -> float:
    """The share of a text's word n-grams that occurred earlier in it (rep-4 at n=4)."""
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def hack_flags(text: str) -> list[str]:
    """The rule-checked hack forms in a response (empty when none): the same families
    `raylign.data.hack_forms` makes, recognised in a policy's own samples."""
    words = text.split()
    flags = []
    if len(words) < 2:
        flags.append("empty")
    sentences = Counter(_sentences(text))
    if (sentences and max(sentences.values()) >= 3) or (len(words) >= 12 and repeated_ngram_share(words) > 0.5):
        flags.append("repetition")
    if has_turn_marker(text):
        flags.append("marker")
    if len(APOLOGY.findall(text)) >= 3:
        flags.append("apology")
    if len(SIGN_OFF.findall(text)) >= 2:
        flags.append("padding")
    if len(words) >= 8 and not re.search(r"[.!?…)\]\"'*`:]\s*$", text):
        flags.append("truncated")
    if (2 <= len(words) <= 25 and any(h in text.lower() for h in HEDGES)) or (len(words) <= 15 and REMARK.search(text)):
        flags.append("noncommittal")
    lone_question = text.rstrip().endswith("?") and not re.search(r"[.!?]", text.rstrip()[:-1])
    if len(words) <= 15 and lone_question and ECHO_QUESTION.search(text):
        flags.append("echo_question")
    return flags


def pairs_of(row: dict, top_k: int) -> list[dict]:
    """One ranked row -> (best passing response, flagged top response) preference rows."""
    ranked = sorted(zip(row["scores"], row["responses"], row.get("sources") or [""] * len(row["responses"])),
                    key=lambda item: -item[0])
    passing = [item for item in ranked if not hack_flags(item[1])]
    if not passing:
        return []
    best_score, best, best_source = passing[0]
    out = []
    for score, response, source in ranked[:top_k]:
        flags = hack_flags(response)
        if flags and score >= best_score:
            out.append({"prompt": row["prompt"], "messages": row["messages"], "chosen": best, "rejected": response,
                        "hack": ",".join(flags), "chosen_score": best_score, "rejected_score": score,
                        "chosen_source": best_source, "rejected_source": source})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="raylign annotate hack-pairs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranked", nargs="+", required=True, help="`annotate rank` files of a policy's samples")
    parser.add_argument("--top-k", type=int, default=2, help="look for hacks among each prompt's k best-scored responses")
    parser.add_argument("--output", required=True, help="preference rows for `train rm` (rm.extra_pairs)")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top-k must be at least 1")
    pairs, prompts, flagged = [], 0, Counter()
    for path in args.ranked:
        for record in iter_records(path):
            row = record.data
            missing = {"prompt", "messages", "responses", "scores"} - set(row)
            if missing:
                raise DataError(f"{record.source}: missing field(s) {sorted(missing)} (write it with `raylign annotate rank`)")
            prompts += 1
            for pair in pairs_of(row, args.top_k):
                pairs.append(pair)
                flagged.update(pair["hack"].split(","))
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    print(f"{len(pairs)} hack pairs from {prompts} prompts -> {out}; flags: {dict(flagged.most_common())}")
