"""Progressive delivery: the rollout state kept in the routing spec, analysis, and the controller."""
