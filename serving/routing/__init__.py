"""Routing: the spec that says how a model's traffic is served, its store, and the strategies."""
