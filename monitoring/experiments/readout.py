"""Experiment readout statistics at the randomisation unit: per-variant rates, absolute and
relative lift with confidence intervals, two-sided p-values, sample-ratio mismatch, CUPED.

Ratio metrics (clicks / impressions) use the delta method through linearisation (Deng et al.,
"Applying the Delta Method in Metric Analytics", 2018): in arm ``a`` with rate
``R_a = sum(y) / sum(n)`` each unit gets ``L_i = R_a + (y_i - R_a n_i) / mean(n)``. The mean of
``L`` over the arm is exactly ``R_a`` and its variance divided by the arm's units is the
delta-method variance of ``R_a``; so CTR is analysed as a ratio of sums (impressions of a busy
customer count as much as anyone's) with a variance that respects that a customer's impressions
are not independent. Per-unit means are the special case ``n_i = 1``.

The lift is the coefficient of the arm's dummy in an OLS of ``L`` (statsmodels) with HC2 robust
covariance, which for dummies alone is Welch's unequal-variance test; the relative lift
``b / a`` gets its interval by the delta method on the fitted covariance. CUPED adds the
centred pre-period covariates to the same regression: each coefficient is the standard
``theta = cov(Y, X) / var(X)`` (within arms), and the arm coefficient is the CUPED-adjusted
difference (Deng et al. 2013). Intervals and p-values are normal (large samples).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.weightstats import DescrStatsW
from tqdm import tqdm

from monitoring.experiments.sources import APP, SEGMENT, VARIANT, ExperimentUnits, Metric

#: Fewer units than this in an arm give no variance: the arm is reported without a lift.
MIN_UNITS_PER_ARM: Final = 2
#: SRM is checked on every readout, so its threshold is stricter than the lift's alpha.
DEFAULT_SRM_ALPHA: Final = 0.001


@dataclass(frozen=True)
class SampleRatioCheck:
    """Chi-square test of units per variant against the expected split."""

    observed: dict[str, int]
    expected_share: dict[str, float]
    chi2: float
    p_value: float
    alpha: float
    mismatch: bool


@dataclass(frozen=True)
class VariantRate:
    """One arm's metric: ``rate = numerator / denominator`` (sums over its units) and its CI;
    ``adjusted_rate`` is the CUPED-adjusted rate when covariates were used."""

    variant: str
    units: int
    numerator: float
    denominator: float
    rate: float
    ci_low: float
    ci_high: float
    adjusted_rate: float | None = None


@dataclass(frozen=True)
class LiftEstimate:
    """Lift of an arm over control: absolute (rate difference, metric units) and relative
    (fraction: 0.09 = +9%), each with its CI; two-sided p-value of no difference."""

    absolute: float
    absolute_ci_low: float
    absolute_ci_high: float
    absolute_std_error: float
    relative: float
    relative_ci_low: float
    relative_ci_high: float
    relative_std_error: float
    p_value: float
    significant: bool


@dataclass(frozen=True)
class Lift:
    """One arm against control: the plain estimate and, with covariates, the CUPED one."""

    variant: str
    control: str
    raw: LiftEstimate
    cuped: LiftEstimate | None = None
    cuped_theta: dict[str, float] | None = None
    #: 1 - var(CUPED lift) / var(plain lift): the share of variance CUPED removed.
    variance_reduction: float | None = None

    @property
    def primary(self) -> LiftEstimate:
        """The estimate to read: CUPED's when there is one."""
        return self.cuped or self.raw


@dataclass(frozen=True)
class MetricReadout:
    metric: str
    label: str
    variants: list[VariantRate]
    lifts: list[Lift]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SliceReadout:
    """A readout of every metric on one group of units (all, one app, one segment)."""

    name: str
    kind: str
    value: str | None
    units: dict[str, int]
    srm: SampleRatioCheck
    metrics: list[MetricReadout]


@dataclass(frozen=True)
class ExperimentReadout:
    """The whole analysis: overall, per app and per segment."""

    experiment: str | None
    source: str
    unit: str
    control: str
    alpha: float
    srm_alpha: float
    metrics: list[dict[str, Any]]
    window: dict[str, str | None]
    notes: list[str]
    overall: SliceReadout
    by_app: list[SliceReadout]
    by_segment: list[SliceReadout]

    @property
    def slices(self) -> list[SliceReadout]:
        return [self.overall, *self.by_app, *self.by_segment]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (NaN and infinities become None)."""
        return _json_ready(asdict(self))


def sample_ratio_mismatch(
    observed: Mapping[str, int],
    expected_split: Mapping[str, float] | None = None,
    alpha: float = DEFAULT_SRM_ALPHA,
) -> SampleRatioCheck:
    """Test unit counts per variant against ``expected_split`` (shares, normalised; None =
    equal shares over the observed variants) with scipy's chi-square goodness of fit. Arms in
    the split without units count 0; a variant without a share is an error."""
    expected = dict(expected_split) if expected_split else {v: 1.0 for v in observed}
    unknown = sorted(set(observed) - set(expected))
    if unknown:
        raise ValueError(
            f"expected-split: no share for variant(s) {', '.join(unknown)} "
            f"(shares given for {', '.join(expected)})"
        )
    for variant, share in expected.items():
        if not share > 0:
            raise ValueError(f"expected-split: share of {variant!r} must be positive, got {share}")
    total = sum(expected.values())
    shares = {v: s / total for v, s in expected.items()}
    counts = np.array([int(observed.get(v, 0)) for v in shares], dtype=float)
    n = counts.sum()
    if n == 0:
        raise ValueError("variant: no units to test the split on")
    if len(shares) < 2:
        chi2, p_value = 0.0, 1.0
    else:
        result = stats.chisquare(counts, f_exp=n * np.array(list(shares.values())))
        chi2, p_value = float(result.statistic), float(result.pvalue)
    return SampleRatioCheck(
        observed={v: int(c) for v, c in zip(shares, counts, strict=True)},
        expected_share=shares,
        chi2=chi2,
        p_value=p_value,
        alpha=alpha,
        mismatch=p_value < alpha,
    )


def compare_variants(
    frame: pd.DataFrame,
    metric: Metric,
    *,
    control: str,
    alpha: float = 0.05,
    order: Sequence[str] = (),
) -> MetricReadout:
    """Rates per variant and the lift of every other variant over ``control`` for one metric,
    on a frame with one row per unit (``variant`` column plus the metric's columns)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: must lie in (0, 1), got {alpha}")
    notes: list[str] = []
    present = set(frame[VARIANT].unique())
    arms = [control, *[v for v in order if v in present and v != control]]
    arms += sorted(present - set(arms))
    y_all = frame[metric.numerator].to_numpy(dtype=float)
    n_all = (
        frame[metric.denominator].to_numpy(dtype=float)
        if metric.denominator
        else np.ones(len(frame))
    )
    variant_all = frame[VARIANT].to_numpy()

    usable: list[str] = []
    for arm in arms:
        mask = variant_all == arm
        units = int(mask.sum())
        if units < MIN_UNITS_PER_ARM:
            notes.append(f"{arm}: {units} unit(s), too few for a variance")
        elif n_all[mask].sum() <= 0:
            notes.append(f"{arm}: no {metric.denominator}, so no rate")
        else:
            usable.append(arm)
    if control not in usable:
        notes.append(f"control {control!r} has no usable rate: no lifts")
        return MetricReadout(metric.name, metric.label, [], [], notes)

    keep = np.isin(variant_all, usable)
    y, n, variant = y_all[keep], n_all[keep], variant_all[keep]
    linear = np.empty(len(y))
    rates: list[VariantRate] = []
    for arm in usable:
        mask = variant == arm
        rate = y[mask].sum() / n[mask].sum()
        linear[mask] = rate + (y[mask] - rate * n[mask]) / n[mask].mean()
        low, high = DescrStatsW(linear[mask]).zconfint_mean(alpha=alpha)
        rates.append(
            VariantRate(
                arm, int(mask.sum()), float(y[mask].sum()), float(n[mask].sum()), float(rate),
                float(low), float(high),
            )
        )  # fmt: skip

    treatments = usable[1:]
    if np.ptp(linear) == 0:
        notes.append(f"{metric.label}: no variation across units (rate {linear[0]:g}), no lift")
        return MetricReadout(metric.name, metric.label, rates, [], notes)
    design = np.column_stack([np.ones(len(y)), *[(variant == t).astype(float) for t in treatments]])
    raw_fit = sm.OLS(linear, design).fit(cov_type="HC2")
    cuped_fit, covariates = None, _usable_covariates(frame.loc[keep], metric, notes)
    if covariates is not None and treatments:
        centred = covariates.to_numpy(dtype=float) - covariates.to_numpy(dtype=float).mean(axis=0)
        cuped_fit = sm.OLS(linear, np.column_stack([design, centred])).fit(cov_type="HC2")
        rates = [_with_adjusted_rate(r, cuped_fit.params, usable.index(r.variant)) for r in rates]

    lifts = []
    for column, arm in enumerate(treatments, start=1):
        raw = _lift_estimate(raw_fit, column, alpha)
        if cuped_fit is None or covariates is None:
            lifts.append(Lift(arm, control, raw))
            continue
        cuped = _lift_estimate(cuped_fit, column, alpha)
        theta = dict(
            zip(covariates.columns, map(float, cuped_fit.params[len(usable) :]), strict=True)
        )
        reduction = (
            1.0 - (cuped.absolute_std_error / raw.absolute_std_error) ** 2
            if raw.absolute_std_error > 0
            else None
        )
        lifts.append(Lift(arm, control, raw, cuped, theta, reduction))
    return MetricReadout(metric.name, metric.label, rates, lifts, notes)


def _usable_covariates(
    frame: pd.DataFrame, metric: Metric, notes: list[str]
) -> pd.DataFrame | None:
    """The metric's covariates that vary (a constant one carries no information)."""
    if not metric.covariates:
        return None
    columns = [c for c in metric.covariates if frame[c].nunique() > 1]
    dropped = sorted(set(metric.covariates) - set(columns))
    if dropped:
        notes.append(f"covariate(s) {', '.join(dropped)} constant here: not used for CUPED")
    return frame[columns] if columns else None


def _with_adjusted_rate(rate: VariantRate, params: np.ndarray, arm_index: int) -> VariantRate:
    adjusted = params[0] + (params[arm_index] if arm_index > 0 else 0.0)
    return VariantRate(**{**asdict(rate), "adjusted_rate": float(adjusted)})


def _lift_estimate(fit: Any, column: int, alpha: float) -> LiftEstimate:
    """Absolute lift (the arm's coefficient) and relative lift ``b / a`` (delta method on the
    fitted covariance of intercept ``a`` and coefficient ``b``)."""
    params = np.asarray(fit.params)
    cov = np.asarray(fit.cov_params())
    low, high = np.asarray(fit.conf_int(alpha=alpha))[column]
    a, b = params[0], params[column]
    z = stats.norm.ppf(1 - alpha / 2)
    if a != 0:
        relative = b / a
        gradient = np.array([-b / a**2, 1 / a])
        block = cov[np.ix_([0, column], [0, column])]
        relative_se = float(math.sqrt(max(gradient @ block @ gradient, 0.0)))
    else:
        relative, relative_se = math.nan, math.nan
    p_value = float(np.asarray(fit.pvalues)[column])
    return LiftEstimate(
        absolute=float(b),
        absolute_ci_low=float(low),
        absolute_ci_high=float(high),
        absolute_std_error=float(np.asarray(fit.bse)[column]),
        relative=float(relative),
        relative_ci_low=float(relative - z * relative_se),
        relative_ci_high=float(relative + z * relative_se),
        relative_std_error=relative_se,
        p_value=p_value,
        significant=bool(p_value < alpha),
    )


def readout_slice(
    frame: pd.DataFrame,
    metrics: Sequence[Metric],
    *,
    control: str,
    expected_split: Mapping[str, float] | None = None,
    alpha: float = 0.05,
    srm_alpha: float = DEFAULT_SRM_ALPHA,
    name: str = "overall",
    kind: str = "overall",
    value: str | None = None,
) -> SliceReadout:
    """SRM and every metric on one group of units (one row per unit)."""
    counts = frame[VARIANT].value_counts()
    order = list(expected_split or []) + sorted(set(counts.index) - set(expected_split or []))
    units = {v: int(counts.get(v, 0)) for v in order}
    srm = sample_ratio_mismatch(
        {v: c for v, c in units.items() if c > 0}, expected_split, alpha=srm_alpha
    )
    readouts = [
        compare_variants(frame, m, control=control, alpha=alpha, order=order) for m in metrics
    ]
    return SliceReadout(name, kind, value, units, srm, readouts)


def experiment_readout(
    units: ExperimentUnits,
    *,
    control: str | None = None,
    alpha: float = 0.05,
    srm_alpha: float = DEFAULT_SRM_ALPHA,
    progress: bool = False,
) -> ExperimentReadout:
    """The readout of ``units``: overall, per app (when known) and per segment (when known).
    ``control`` defaults to the source's (``control``)."""
    per_unit = units.per_unit()
    variants = sorted(per_unit[VARIANT].unique())
    chosen = control or units.default_control or ""
    if chosen not in variants:
        raise ValueError(
            f"control: no variant named {chosen!r}; variants are: {', '.join(variants)}"
        )

    def readout(
        rows: pd.DataFrame, kind: str = "overall", value: str | None = None
    ) -> SliceReadout:
        return readout_slice(
            rows,
            units.metrics,
            control=chosen,
            expected_split=units.expected_split,
            alpha=alpha,
            srm_alpha=srm_alpha,
            name="overall" if value is None else f"{kind}={value}",
            kind=kind,
            value=value,
        )

    apps = sorted(units.frame[APP].unique()) if units.has_apps else []
    segments = sorted(per_unit[SEGMENT].unique()) if units.has_segments else []
    with tqdm(
        total=1 + len(apps) + len(segments), desc="readout", unit="slice", disable=not progress
    ) as bar:
        overall = readout(per_unit)
        bar.update()
        by_app = []
        for app in apps:
            by_app.append(readout(units.frame[units.frame[APP] == app], "app", str(app)))
            bar.update()
        by_segment = []
        for segment in segments:
            by_segment.append(
                readout(per_unit[per_unit[SEGMENT] == segment], "segment", str(segment))
            )
            bar.update()
    return ExperimentReadout(
        experiment=units.experiment,
        source=units.source,
        unit=units.unit_name,
        control=chosen,
        alpha=alpha,
        srm_alpha=srm_alpha,
        metrics=[asdict(m) | {"label": m.label} for m in units.metrics],
        window=dict(units.window),
        notes=list(units.notes),
        overall=overall,
        by_app=by_app,
        by_segment=by_segment,
    )


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
