"""Benchmark: off-policy estimates of Bernoulli TS's click rate from the uniform-random Open
Bandit log, checked against the click rate BTS observed in its own log (all, men, women).

Usage::

    .venv/bin/python bench/ope_open_bandit.py --bootstrap 5000 --seed 0

Writes ``bench/results/ope_open_bandit.json`` (IPS, SNIPS and DR per campaign with their 95%
intervals, BTS's observed click rate with its Wilson interval, coverage, relative error, the
reference figures of docs/CALIBRATION.md, wall seconds, machine) and ``ope_open_bandit.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy
import sklearn

from monitoring.ope.open_bandit import validate_on_open_bandit
from monitoring.ope.report import open_bandit_report, write_open_bandit_report
from persona.settings import get_settings

RESULTS = Path(__file__).resolve().parent / "results"
#: CALIBRATION.md: SNIPS on the random log, 95% bootstrap interval, and BTS's observed CTR.
CALIBRATION_SNIPS = {
    "all": {"estimate": 0.0063, "ci_low": 0.0031, "ci_high": 0.0106, "observed": 0.0042},
    "men": {"estimate": 0.0055, "ci_low": 0.0032, "ci_high": 0.0080, "observed": 0.0069},
    "women": {"estimate": 0.0059, "ci_low": 0.0036, "ci_high": 0.0086, "observed": 0.0046},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=5000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap and cross-fitting seed")
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="open_bandit folder (default: the shared data's open_bandit)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for JSON + PNG")
    args = parser.parse_args(argv)

    source = args.source or get_settings().shared_data_dir / "open_bandit"
    started = time.perf_counter()
    validations = validate_on_open_bandit(
        source, n_bootstrap=args.bootstrap, seed=args.seed, progress=True
    )
    wall = time.perf_counter() - started
    report = open_bandit_report(validations, source=source, seed=args.seed)
    paths = write_open_bandit_report(report, args.results, stem="ope_open_bandit")
    document = {
        "benchmark": "ope_open_bandit",
        **json.loads(paths.json.read_text()),
        "reference_calibration_snips": CALIBRATION_SNIPS,
        "wall_s": round(wall, 2),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "platform": platform.platform(),
        },
    }
    paths.json.write_text(json.dumps(document, indent=2) + "\n")
    for validation in validations:
        cells = ", ".join(
            f"{e.name} {e.value:.3%} [{e.ci_low:.3%}, {e.ci_high:.3%}] "
            f"{'covers' if validation.covered[e.name] else 'MISSES'} "
            f"({validation.relative_error[e.name]:+.0%})"
            for e in validation.estimates
        )
        print(f"{validation.campaign}: observed {validation.observed_ctr:.3%}; {cells}")
    print(f"wrote {paths.json} and {paths.png} in {wall:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
