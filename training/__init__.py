"""Training: point-in-time training sets, Ray Train rankers, evaluation, registry (issue 4)."""
