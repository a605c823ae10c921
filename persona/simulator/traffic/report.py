"""The A/B report of a traffic run: JSON, one PNG and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from persona.simulator.traffic.analysis import AbReport


def _plot(report: AbReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, max(4.0, 0.32 * len(report.lifts) + 1.5)))
    arms = list(report.ctr)
    for i, arm in enumerate(arms):
        c = report.ctr[arm]
        left.errorbar(
            [c["rate"] * 100],
            [i],
            xerr=[[100 * (c["rate"] - c["ci_low"])], [100 * (c["ci_high"] - c["rate"])]],
            fmt="o",
            color="C0",
        )
    for j, check in enumerate(report.ope):
        y = len(arms) + j
        left.errorbar(
            [check.estimate * 100],
            [y],
            xerr=[
                [100 * (check.estimate - check.ci_low)],
                [100 * (check.ci_high - check.estimate)],
            ],
            fmt="s",
            color="C1",
        )
    if report.ope:
        left.axvline(report.ope[0].observed_ctr * 100, color="C1", ls=":", lw=1)
    left.set_yticks(
        range(len(arms) + len(report.ope)),
        arms + [f"transformer, OPE {c.estimator}" for c in report.ope],
    )
    left.set_xlabel("CTR per impression (%), 95% CI")
    left.set_title("online CTR per arm; off-policy estimate from the baseline's log")
    treatment = [x for x in report.lifts if x.variant == "transformer"]
    for i, lift in enumerate(treatment):
        color = "C2" if lift.ci_low > 0 else "C3" if lift.ci_high < 0 else "C7"
        right.errorbar(
            [lift.relative * 100],
            [i],
            xerr=[[100 * (lift.relative - lift.ci_low)], [100 * (lift.ci_high - lift.relative)]],
            fmt="o",
            color=color,
        )
    right.axvline(0, color="k", lw=0.8)
    right.axvline(9, color="C2", ls="--", lw=0.8)
    right.set_yticks(range(len(treatment)), [x.slice for x in treatment])
    right.invert_yaxis()
    right.set_xlabel("transformer vs control, relative CTR lift (%), 95% CI (target +9%)")
    right.set_title("lift overall, per app, per segment")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r.values()) + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.5g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def write_report(report: AbReport, extra: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """``ab_report.json``, ``ab_report.png``, ``ab_report.html`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "ab_report.json",
        "png": out_dir / "ab_report.png",
        "html": out_dir / "ab_report.html",
    }
    payload = {**extra, **json.loads(report.model_dump_json())}
    paths["json"].write_text(json.dumps(payload, indent=2) + "\n")
    _plot(report, paths["png"])
    png = base64.b64encode(paths["png"].read_bytes()).decode()
    sections = [
        ("Run", _table([{k: v for k, v in extra.items() if not isinstance(v, dict | list)}])),
        ("Accounting", _table([report.accounting.model_dump()])),
        (
            "CTR per arm",
            _table([{"variant": k, **v} for k, v in report.ctr.items()])
            + f"<p>sample-ratio mismatch p = {report.srm_p_value:.3g}"
            f"{' (MISMATCH)' if report.srm_mismatch else ''}</p>",
        ),
        ("Lift (overall, per app, per segment)", _table([x.model_dump() for x in report.lifts])),
        (
            "Relevance: NDCG@10 against the hidden truth, per arm",
            _table([x.model_dump() for x in report.relevance])
            + f"<p>transformer vs control: {_fmt(report.relevance_lift)}</p>",
        ),
        (
            "Offline test NDCG@10 (training report, candidates)",
            _table([report.offline_ndcg10])
            + f"<p>transformer vs segment popularity: {_fmt(report.offline_lift_vs_segment_popularity)}</p>",
        ),
        (
            "Off-policy estimate of the transformer arm's CTR from the control arm's log",
            _table([x.model_dump() for x in report.ope]) + _table([report.ope_details]),
        ),
        (
            "Guardrails per arm (violations)",
            _table(
                [
                    {"variant": g.variant, "impressions": g.impressions, **g.violations}
                    for g in report.guardrails
                ]
            ),
        ),
        ("Notes", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>"),
    ]
    body = "".join(f"<h2>{html.escape(t)}</h2>{s}" for t, s in sections)
    paths["html"].write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>A/B: "
        f"{html.escape(report.experiment)}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px}"
        "</style></head><body>"
        f"<h1>Online A/B experiment {html.escape(report.experiment)}</h1>"
        f"<img src='data:image/png;base64,{png}' style='max-width:100%'>{body}"
        f"<p>Experiment readout: {html.escape(report.readout['html'])}</p></body></html>"
    )
    return paths
