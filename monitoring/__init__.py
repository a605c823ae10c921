"""Monitoring, drift, anomaly detection, experiment analysis (issue 6)."""
