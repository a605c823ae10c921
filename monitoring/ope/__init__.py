"""Off-policy evaluation: judge a new policy on old logs (IPS, SNIPS, doubly robust)."""
