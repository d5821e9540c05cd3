"""Feedback: pairwise annotators (reward models, LLM judges, HTTP judges) and AlpacaFarm-style pools."""
