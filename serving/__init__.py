"""Serving: the Ray Serve graph (issue 5)."""
