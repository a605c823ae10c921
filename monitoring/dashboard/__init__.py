"""``persona dashboard``: one self-contained HTML page of KPIs, drift, anomalies, segments and
experiment readouts."""
