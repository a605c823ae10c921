"""Seasonality-aware anomaly detection on hourly KPI series, online and without look-ahead.

Method, per series (one KPI of one app or app × segment):

1. Every ``refit_every`` hours, decompose the trailing ``train_hours`` of the series with
   statsmodels' MSTL (daily and weekly seasonality; STL with the daily period alone when the
   window holds two weeks or less, and always for shares, which have no weekly shape of
   their own) on a variance-friendly scale: log(1 + count) for volume, the share for CTR and
   fallbacks (each hour shrunk toward the window's pooled share by its number of trials, so a
   night hour with five impressions does not shape the season), log(ms) for latency. A fit
   only sees hours before those it will score.
2. Each following hour ``t`` is expected at ``level(t) + seasonal(t)``: the seasonal
   components at the same phase of the last cycle, and as level, for volumes and latencies,
   the precision-weighted mean of the last ``level_hours`` deseasonalised hours pulled toward
   the trend as far as a day's level usually strays from it (so today's level is followed
   hour by hour, and a few quiet night hours do not set the morning's level on their own);
   for shares, the last fit's trend (a drop is measured against the days before it).
3. The residual is standardised by the noise an hour of that size has: the sampling variance
   of a count or share (Poisson / binomial, scaled by a fitted dispersion, so a quiet night
   hour is not judged like the peak) plus an extra variance τ², both calibrated on the
   detector's own recent out-of-sample errors (the last ``calibration_hours`` of the first
   training window are scored blind) so that their robust z-scores (median / MAD) have unit
   spread.
4. An hour is flagged when the change is material (``KpiRule.min_effect``: 20 % volume, 10 %
   CTR, 15 % latency, +1 point of fallbacks) in the KPI's bad direction (CTR down, volume
   either way, latency up, fallbacks up) and either its z-score passes ``threshold`` or the
   precision-weighted combined score of the last ``sustained_hours`` hours does (scaled by
   its own measured spread): a weak but lasting shift. A flagged hour is kept out of the
   history the level and the next fits learn from (replaced by its expectation; other hours
   enter clipped at ``level_clip`` standard deviations), so an incident does not teach the
   detector that it is normal (for at most ``adapt_after_hours`` in a row: a lasting change
   becomes the new normal).
5. Runs of at least ``min_consecutive`` flagged hours (gaps of up to ``merge_gap_hours``
   bridged) become one :class:`monitoring.alerts.Alert` of kind ``kpi_anomaly``.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.optimize import brentq
from statsmodels.tsa.seasonal import MSTL, STL
from tqdm import tqdm

from monitoring.alerts import Alert
from monitoring.kpi import ALL_SEGMENTS, KpiSeries
from persona.domain import APPS

Direction = Literal["down", "up", "both"]
Scale = Literal["log_count", "share", "log"]
#: 1 / Φ⁻¹(0.75): turns a median absolute deviation into a standard deviation.
MAD_TO_SD: Final = 1.4826
#: STL settings: each phase's seasonal value is a local mean over cycles (degree 0: with three
#: weeks of Mondays, a local line would extrapolate one unusual Monday into the next); MSTL
#: evaluates its trend and low-pass smoothers every 12 hours and interpolates between (about
#: 8× faster on a three-week window; those smoothers span days anyway).
_STL_OPTIONS: Final = {"seasonal_deg": 0}
_MSTL_OPTIONS: Final = {"seasonal_deg": 0, "trend_jump": 12, "low_pass_jump": 12}


@dataclass(frozen=True)
class KpiRule:
    """How one KPI is judged: which way is bad, on what scale, the smallest noise scale, and
    the smallest change worth an alert (significant is not enough: a 4 % dip in a busy hour can
    be significant and still not be an incident)."""

    direction: Direction
    scale: Scale
    #: Floor of τ on the transformed scale (log units or share), so a flat series is not
    #: alarmed by a rounding difference.
    min_noise: float
    #: Smallest change that counts: relative (0.2 = 20 % above or below expectation) or, for
    #: ``effect="absolute"``, in the KPI's own unit (0.01 = one percentage point of a share).
    min_effect: float
    effect: Literal["relative", "absolute"] = "relative"
    #: Fit only the shortest (daily) period: shares have no weekly shape of their own (the
    #: week's swings in traffic cancel in a ratio), and a weekly component learnt from three
    #: noisy weeks would only add noise to every expectation.
    shortest_period_only: bool = False
    #: Follow the level hour by hour between refits (volumes and latencies wander within a
    #: day); shares are expected at the last fit's trend, so a drop is measured against the
    #: days before it instead of being followed into the new normal.
    follow_level: bool = True


KPI_RULES: Final[dict[str, KpiRule]] = {
    "volume": KpiRule(direction="both", scale="log_count", min_noise=0.02, min_effect=0.2),
    "ctr": KpiRule(
        direction="down",
        scale="share",
        min_noise=1e-4,
        min_effect=0.1,
        shortest_period_only=True,
        follow_level=False,
    ),
    "latency_p95_ms": KpiRule(direction="up", scale="log", min_noise=0.02, min_effect=0.15),
    "fallback_share": KpiRule(
        direction="up",
        scale="share",
        min_noise=1e-4,
        min_effect=0.01,
        effect="absolute",
        shortest_period_only=True,
        follow_level=False,
    ),
}


class DetectorConfig(BaseModel):
    """Knobs of the KPI anomaly detector; times are in hours (the series' step)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    periods: tuple[int, ...] = Field(
        default=(24, 168),
        description="Seasonal periods, hours: daily and weekly (MSTL); (24,) for plain STL.",
    )
    seasonal_smoothing: int = Field(
        default=13, ge=7, description="STL seasonal window: cycles each phase is smoothed over."
    )
    train_hours: int = Field(
        default=504, ge=48, description="Trailing window each decomposition is fitted on."
    )
    refit_every: int = Field(default=24, ge=1, description="Hours between refits.")
    level_hours: int = Field(
        default=12, ge=1, description="Recent hours whose precision-weighted mean sets the level."
    )
    calibration_hours: int = Field(
        default=144,
        ge=24,
        description="Out-of-sample errors τ is calibrated on (the first ones come from "
        "scoring the end of the first training window blind).",
    )
    shrink_events: float = Field(
        default=10.0,
        ge=0,
        description="Shares: pseudo-events an hour is shrunk toward the pooled share with.",
    )
    threshold: float = Field(default=4.0, gt=0, description="|z| that flags one hour.")
    sustained_hours: tuple[int, ...] = Field(
        default=(4,),
        description="Windows (hours) whose combined score flags a weak but lasting shift.",
    )
    min_consecutive: int = Field(
        default=2, ge=1, description="Flagged hours in a row that raise an alert."
    )
    merge_gap_hours: int = Field(
        default=1, ge=0, description="Unflagged hours bridged inside one alert."
    )
    alert_threshold: float = Field(
        default=8.0, gt=0, description="Peak |z| from which an alert's severity is 'alert'."
    )
    level_clip: float = Field(
        default=2.0,
        gt=0,
        description="An unflagged hour moves the level by at most this many standard deviations.",
    )
    adapt_after_hours: int = Field(
        default=24, ge=1, description="After this many flagged hours in a row, accept the level."
    )

    @model_validator(mode="after")
    def _consistent(self) -> DetectorConfig:
        if not self.periods or min(self.periods) < 2:
            raise ValueError("periods: at least one seasonal period of 2 hours or more")
        if self.refit_every > min(self.periods):
            raise ValueError(
                f"refit_every: {self.refit_every} h exceeds the shortest period "
                f"{min(self.periods)} h"
            )
        if self.warmup_hours < 2 * min(self.periods) + 1:
            raise ValueError(
                f"train_hours: {self.train_hours} h less calibration_hours "
                f"({self.calibration_hours} h) must hold more than two cycles of the shortest "
                f"period ({min(self.periods)} h)"
            )
        if any(hours < 1 for hours in self.sustained_hours):
            raise ValueError("sustained_hours: every window must be at least 1 hour")
        if self.alert_threshold < self.threshold:
            raise ValueError("alert_threshold: must not be below threshold")
        return self

    @property
    def warmup_hours(self) -> int:
        """Hours of the first (blind) fit: the training window less the calibration hours."""
        return self.train_hours - min(self.calibration_hours, self.train_hours // 2)

    def fitted_periods(self, window_hours: int) -> tuple[int, ...]:
        """The periods a window of ``window_hours`` holds more than two cycles of."""
        return tuple(sorted(p for p in self.periods if 2 * p < window_hours))


@dataclass(frozen=True)
class ScoredSeries:
    """A series with what the detector made of it, hour by hour (NaN before the first fit).

    ``expected`` is in the KPI's own unit; ``z`` the standardised residual (positive = above
    expectation); ``flagged`` the hours judged anomalous in the KPI's bad direction.
    """

    series: KpiSeries
    expected: np.ndarray
    z: np.ndarray
    flagged: np.ndarray

    @property
    def scored(self) -> np.ndarray:
        """Hours that were scored (after the first training window, with a defined value)."""
        return ~np.isnan(self.z)


@dataclass(frozen=True)
class DetectionResult:
    """Alerts of a detection run and the scored series they came from."""

    alerts: list[Alert]
    scored: list[ScoredSeries]


def detect_kpi_anomalies(
    series: Iterable[KpiSeries],
    config: DetectorConfig | None = None,
    *,
    progress: bool = False,
) -> DetectionResult:
    """Score every series online and turn flagged runs into ``kpi_anomaly`` alerts."""
    config = config or DetectorConfig()
    series = list(series)
    scored: list[ScoredSeries] = []
    alerts: list[Alert] = []
    for one in tqdm(series, desc="scoring KPI series", disable=not progress, unit="series"):
        result = score_series(one, config)
        scored.append(result)
        alerts.extend(alerts_from_scores(result, config))
    alerts.sort(key=lambda a: (a.window_start, a.app or "", a.segment or "", a.subject))
    return DetectionResult(alerts=alerts, scored=scored)


def score_series(series: KpiSeries, config: DetectorConfig) -> ScoredSeries:
    """Expectation, z-score and flag of every hour of ``series``, each from earlier hours only.

    Hours of the first ``train_hours`` are not scored (NaN): the end of that window is scored
    blind to calibrate the noise, nothing is flagged there.
    """
    rule = _rule(series.kpi)
    n = len(series)
    if n <= config.train_hours:
        raise ValueError(
            f"{series.name} ({series.app}/{series.segment}): {n} hours is not more than "
            f"train_hours={config.train_hours}; give a longer series or a shorter training window"
        )
    if series.value.shape != (n,) or (series.trials is not None and series.trials.shape != (n,)):
        raise ValueError(f"{series.name}: value and trials must both have shape ({n},)")
    x = _transform(series.value, rule.scale)
    trials = series.trials if series.trials is not None else np.full(n, np.nan)
    clean = x.copy()  # the history the detector learns from: incidents kept out of it
    expected_x = np.full(n, np.nan)
    z = np.full(n, np.nan)
    flagged = np.zeros(n, dtype=bool)
    hour_precision = np.zeros(n)  # 1 / variance of each scored hour
    errors: deque[tuple[float, float]] = deque(maxlen=config.calibration_hours)
    run = 0  # flagged hours in a row, for adapt_after_hours
    for block_start in range(config.warmup_hours, n, config.refit_every):
        block = np.arange(block_start, min(block_start + config.refit_every, n))
        lo = max(0, block_start - config.train_hours)
        noise = None
        if block_start >= config.train_hours:
            noise = _calibrate(errors, rule.min_noise, config.sustained_hours)
        weigh = noise or _Noise(0.0, 1.0, rule.min_noise)
        fit = _fit_window(clean[lo:block_start], trials[lo:block_start], rule, config, weigh)
        if fit is None:
            continue
        seasonal_ahead = fit.seasonal_ahead(len(block))
        # Deseasonalised history (the window's, then the block's as it comes) and each hour's
        # precision: a quiet night hour says little about today's level.
        deseasonalised = np.concatenate([fit.deseasonalised, np.full(len(block), np.nan)])
        precision = np.concatenate([fit.precision, np.zeros(len(block))])
        offset = len(fit.deseasonalised)
        for k, t in enumerate(block):
            recent = slice(offset + k - config.level_hours, offset + k)
            level = (
                fit.level(deseasonalised[recent], precision[recent])
                if rule.follow_level
                else fit.trend_end
            )
            expected_x[t] = level + seasonal_ahead[k]
            if np.isfinite(x[t]):
                variance = _sampling_variance(expected_x[t], trials[t], rule)
                error = float(x[t] - expected_x[t])
                if noise is not None:
                    z[t] = (error - noise.center) / noise.sd(variance)
                    hour_precision[t] = 1 / noise.sd(variance) ** 2
                    flagged[t] = _is_material(x[t], expected_x[t], rule) and (
                        _is_bad(z[t], config.threshold, rule.direction)
                        or _sustained_bad(z, hour_precision, t, config, noise, rule.direction)
                    )
                    # What the level learns from: a flagged hour not at all, any other hour
                    # at most level_clip standard deviations away from its expectation.
                    bound = config.level_clip * noise.sd(variance)
                    clipped = noise.center + float(np.clip(error - noise.center, -bound, bound))
                    clean[t] = expected_x[t] + clipped
                if not flagged[t]:
                    errors.append((error, variance))
            run = run + 1 if flagged[t] else 0
            if flagged[t]:
                clean[t] = expected_x[t] if run <= config.adapt_after_hours else x[t]
            smoothed = fit.fitted_values(clean[t : t + 1], trials[t : t + 1])
            deseasonalised[offset + k] = smoothed[0] - seasonal_ahead[k]
            precision[offset + k] = _precision(smoothed, trials[t : t + 1], rule, weigh)[0]
    expected_x[: config.train_hours] = np.nan
    expected = _inverse(expected_x, rule.scale)
    return ScoredSeries(series=series, expected=expected, z=z, flagged=flagged)


def _precision(values: np.ndarray, trials: np.ndarray, rule: KpiRule, noise: _Noise) -> np.ndarray:
    """1 / variance of each (transformed) hour under ``noise``; 0 where the value is missing."""
    out = np.zeros(len(values))
    for i, value in enumerate(values):
        if np.isfinite(value):
            out[i] = 1 / noise.sd(_sampling_variance(value, trials[i], rule)) ** 2
    return out


def alerts_from_scores(scored: ScoredSeries, config: DetectorConfig) -> list[Alert]:
    """One alert per run of flagged hours (``min_consecutive`` or more, small gaps bridged)."""
    series = scored.series
    periods = config.fitted_periods(config.train_hours)
    if _rule(series.kpi).shortest_period_only:
        periods = periods[:1]
    alerts = []
    for first, last in flagged_runs(scored.flagged, config.min_consecutive, config.merge_gap_hours):
        hours = slice(first, last + 1)
        mask = scored.flagged[hours]
        observed = _window_value(series, hours, mask)
        expected = float(np.nanmean(scored.expected[hours][mask]))
        peak = float(np.nanmax(np.abs(scored.z[hours][mask])))
        signed_peak = float(scored.z[hours][mask][np.nanargmax(np.abs(scored.z[hours][mask]))])
        # Detected when the min_consecutive-th flagged hour ended.
        detected_hour = np.flatnonzero(scored.flagged[first:])[config.min_consecutive - 1] + first
        alerts.append(
            Alert.create(
                kind="kpi_anomaly",
                subject=series.name,
                app=series.app,
                segment=series.segment,
                window_start=_as_datetime(series.hours[first]),
                window_end=_as_datetime(series.hours[last] + pd.Timedelta(hours=1)),
                observed=observed,
                expected=expected,
                score=signed_peak,
                severity="alert" if peak >= config.alert_threshold else "watch",
                detected_at=_as_datetime(series.hours[detected_hour] + pd.Timedelta(hours=1)),
                details={
                    "kpi": series.kpi,
                    "direction": _rule(series.kpi).direction,
                    "hours_flagged": int(mask.sum()),
                    "threshold": config.threshold,
                    "method": "MSTL" if len(periods) > 1 else "STL",
                    "periods_h": list(periods),
                },
            )
        )
    return alerts


def flagged_runs(flagged: np.ndarray, min_length: int, merge_gap: int) -> list[tuple[int, int]]:
    """(first, last) indices of runs of True holding ``min_length`` consecutive Trues, where runs
    separated by at most ``merge_gap`` False are merged first."""
    indices = np.flatnonzero(flagged)
    if len(indices) == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) > merge_gap + 1)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(indices) - 1]))
    runs = []
    for s, e in zip(starts, ends, strict=True):
        first, last = int(indices[s]), int(indices[e])
        if _longest_true_run(flagged[first : last + 1]) >= min_length:
            runs.append((first, last))
    return runs


@dataclass(frozen=True)
class _Shrinkage:
    """Shares: hours shrunk toward the window's pooled share by ``prior_trials`` pseudo-trials,
    so a night hour with five impressions does not shape the season or the level."""

    pooled_share: float | None = None
    prior_trials: float = 0.0

    def apply(self, values: np.ndarray, trials: np.ndarray) -> np.ndarray:
        """``values`` shrunk (shares with known trials), else as they are."""
        if self.pooled_share is None:
            return values
        observed = np.isfinite(values) & (trials > 0)
        events = np.where(observed, values * trials, 0.0)
        shrunk = (events + self.prior_trials * self.pooled_share) / (
            np.where(observed, trials, 0.0) + self.prior_trials
        )
        return np.where(observed, shrunk, np.nan)


@dataclass(frozen=True)
class _WindowFit:
    """One decomposition of a training window and what scoring needs from it."""

    components: list[tuple[int, np.ndarray]]  # (period, seasonal component) to carry forward
    deseasonalised: np.ndarray  # the window less its seasonal components
    precision: np.ndarray  # 1 / variance of each hour of the window
    trend_end: float  # the decomposition's trend at the window's end
    day_precision: float  # 1 / variance of a whole day's level around the trend
    shrinkage: _Shrinkage

    def seasonal_ahead(self, hours: int) -> np.ndarray:
        """Seasonal value of the next ``hours`` points: the same phase of each last cycle."""
        ahead = np.zeros(hours)
        for period, component in self.components:
            n = len(component)
            ahead += component[n - period + (np.arange(hours) % period)]
        return ahead

    def fitted_values(self, values: np.ndarray, trials: np.ndarray) -> np.ndarray:
        """``values`` on the scale the decomposition saw them (shares shrunk)."""
        return self.shrinkage.apply(values, trials)

    def level(self, recent: np.ndarray, precision: np.ndarray) -> float:
        """The level now: the recent deseasonalised hours' precision-weighted mean, pulled
        toward the trend as far as a day's level usually strays from it (so a few quiet night
        hours do not set the morning's level on their own)."""
        known = np.isfinite(recent) & (precision > 0)
        weights = precision[known]
        total = float(weights.sum()) + self.day_precision
        return float((weights @ recent[known] + self.day_precision * self.trend_end) / total)


def _fit_window(
    window: np.ndarray, trials: np.ndarray, rule: KpiRule, config: DetectorConfig, noise: _Noise
) -> _WindowFit | None:
    periods = config.fitted_periods(len(window))
    if rule.shortest_period_only:
        periods = periods[:1]
    if not periods or np.isfinite(window).sum() < len(window) // 2:
        return None  # too little data to learn a season from
    shrinkage = _Shrinkage()
    observed = np.isfinite(window) & (trials > 0)
    if rule.scale == "share" and config.shrink_events > 0 and observed.any():
        events = float(np.sum(window[observed] * trials[observed]))
        if events > 0:
            pooled = events / float(trials[observed].sum())
            shrinkage = _Shrinkage(pooled, config.shrink_events / pooled)
    values = shrinkage.apply(window, trials)
    filled = pd.Series(values).interpolate(limit_direction="both").to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' chatter on flat windows
        if len(periods) > 1:
            windows = [config.seasonal_smoothing + 4 * i for i in range(len(periods))]
            result = MSTL(
                filled, periods=list(periods), windows=windows, stl_kwargs=_MSTL_OPTIONS
            ).fit()
            seasonal_frame = np.asarray(result.seasonal).reshape(len(filled), -1)
            components = [(p, seasonal_frame[:, i]) for i, p in enumerate(periods)]
        else:
            result = STL(
                filled, period=periods[0], seasonal=config.seasonal_smoothing, **_STL_OPTIONS
            ).fit()
            components = [(periods[0], np.asarray(result.seasonal))]
    seasonal = np.sum([c for _, c in components], axis=0)
    trend = np.asarray(result.trend)
    deseasonalised = values - seasonal
    precision = _precision(values, trials, rule, noise)
    return _WindowFit(
        components=components,
        deseasonalised=deseasonalised,
        precision=precision,
        trend_end=float(trend[-1]),
        day_precision=_day_precision(deseasonalised - trend, precision, rule.min_noise),
        shrinkage=shrinkage,
    )


def _day_precision(residual: np.ndarray, precision: np.ndarray, floor: float) -> float:
    """1 / variance of whole days' precision-weighted mean residuals (days counted back from
    the window's end; robust spread, at least ``floor``)."""
    days = len(residual) // 24
    means = []
    for d in range(days):
        hours = slice(len(residual) - 24 * (d + 1), len(residual) - 24 * d)
        weights = np.where(np.isfinite(residual[hours]), precision[hours], 0.0)
        if weights.sum() > 0:
            means.append(float(np.nansum(weights * residual[hours]) / weights.sum()))
    if len(means) < 3:
        return 1 / floor**2
    spread = MAD_TO_SD * float(np.median(np.abs(np.array(means) - np.median(means))))
    return 1 / max(spread, floor) ** 2


@dataclass(frozen=True)
class _Noise:
    """Noise model of one block: error ~ center + N(0, dispersion · sampling variance + τ²);
    ``sustained_sd`` holds, per window length, the robust spread of the combined score over
    that many hours (1 if hours were independent; more when whole days run high or low)."""

    center: float
    dispersion: float
    tau: float
    #: Per sustained window (hours → spread of its combined score).
    sustained_sd: dict[int, float] = field(default_factory=dict)

    def sd(self, sampling_variance: float) -> float:
        return math.sqrt(self.dispersion * sampling_variance + self.tau**2)


def _calibrate(
    errors: deque[tuple[float, float]], floor: float, sustained_hours: tuple[int, ...]
) -> _Noise | None:
    """The noise model of recent out-of-sample errors (with their sampling variances).

    ``center`` is the median error. Two spreads are fitted so that the robust z-scores
    (MAD-scaled) have unit spread both in the hours where sampling noise is largest (quiet
    hours: fixes the dispersion ≥ 1, e.g. 3 when impressions come in slates of three) and in
    the others (busy hours: fixes the extra noise τ ≥ ``floor`` that no sample size removes).
    The spread of the combined score over each ``sustained_hours`` window is measured, not
    assumed, since neighbouring hours share a day's ups and downs.
    """
    if len(errors) < 24:
        return None
    pairs = np.array(errors)
    center = float(np.median(pairs[:, 0]))
    deviations = np.abs(pairs[:, 0] - center)
    variance = pairs[:, 1]
    quiet = variance > np.median(variance)
    dispersion, tau = 1.0, floor
    if not quiet.any():  # no sampling noise at all (latency): one spread, τ
        tau = _solve_spread(lambda t: deviations / np.sqrt(variance + t**2), floor)
        return _with_sustained_sd(_Noise(center, dispersion, tau), pairs, sustained_hours)
    for _ in range(8):  # alternate: τ on busy hours, dispersion on quiet ones
        tau = _solve_spread(
            lambda t, d=dispersion: deviations[~quiet] / np.sqrt(d * variance[~quiet] + t**2),
            floor,
        )
        dispersion = _solve_spread(
            lambda d, t=tau: deviations[quiet] / np.sqrt(d * variance[quiet] + t**2), 1.0
        )
    return _with_sustained_sd(_Noise(center, dispersion, tau), pairs, sustained_hours)


def _with_sustained_sd(noise: _Noise, pairs: np.ndarray, windows: tuple[int, ...]) -> _Noise:
    """``noise`` with the robust spread of the pool's rolling combined scores per window
    (see :func:`combined_score`; 1 if hours were independent, more if they are not)."""
    sd = np.sqrt(noise.dispersion * pairs[:, 1] + noise.tau**2)
    z = (pairs[:, 0] - noise.center) / sd
    weights = 1 / sd**2
    spreads = {}
    for hours in windows:
        if hours <= 1 or len(pairs) < 4 * hours:
            spreads[hours] = 1.0
            continue
        window = np.ones(hours)
        scores = np.convolve(z * np.sqrt(weights), window, mode="valid") / np.sqrt(
            np.convolve(weights, window, mode="valid")
        )
        spread = MAD_TO_SD * float(np.median(np.abs(scores - np.median(scores))))
        spreads[hours] = max(spread, 1.0)
    return _Noise(noise.center, noise.dispersion, noise.tau, spreads)


def combined_score(z: np.ndarray, precision: np.ndarray) -> float:
    """Evidence of a common shift over several hours: Σ zᵢ·√wᵢ / √Σ wᵢ with wᵢ the hours'
    precisions (1 / variance); a standard normal when the hours are independent and unshifted.
    Busy hours count more than quiet ones, so a night hour with a few impressions does not
    dilute the evidence of the busy hours around it."""
    known = np.isfinite(z) & (precision > 0)
    if not known.any():
        return 0.0
    return float(np.sum(z[known] * np.sqrt(precision[known])) / np.sqrt(precision[known].sum()))


def _solve_spread(standardised: Callable[[float], np.ndarray], low: float) -> float:
    """The smallest parameter ≥ ``low`` at which the MAD-scaled spread of
    ``standardised(parameter)`` (decreasing in it) is at most 1."""

    def spread(parameter: float) -> float:
        return MAD_TO_SD * float(np.median(standardised(parameter))) - 1.0

    if spread(low) <= 0:
        return low
    upper = max(low, 1e-6) * 2
    while spread(upper) > 0:
        upper *= 2
    return float(brentq(spread, low, upper, xtol=1e-9 * upper))


def _transform(value: np.ndarray, scale: Scale) -> np.ndarray:
    value = np.asarray(value, dtype=np.float64)
    if scale == "log_count":
        if (value[np.isfinite(value)] < 0).any():
            raise ValueError("volume: counts must not be negative")
        return np.log1p(value)
    if scale == "log":
        if (value[np.isfinite(value)] <= 0).any():
            raise ValueError("latency_p95_ms: values must be positive")
        return np.log(value)
    if ((value[np.isfinite(value)] < 0) | (value[np.isfinite(value)] > 1)).any():
        raise ValueError("shares (ctr, fallback_share) must lie in 0..1")
    return value


def _inverse(x: np.ndarray, scale: Scale) -> np.ndarray:
    if scale == "log_count":
        return np.expm1(x)
    if scale == "log":
        return np.exp(x)
    return x


def _sampling_variance(expected_x: float, trials: float | None, rule: KpiRule) -> float:
    """Variance of the transformed KPI that sampling alone gives at its expected value."""
    if rule.scale == "log_count":
        return 1.0 / (math.expm1(max(expected_x, 0.0)) + 1.0)  # Var log(1+Y) ≈ 1/(1+λ)
    if rule.scale == "share":
        if trials is None or trials <= 0:
            return 0.0
        share = min(max(expected_x, 1e-4), 1 - 1e-4)
        return share * (1 - share) / trials
    return 0.0


def _is_material(x: float, expected_x: float, rule: KpiRule) -> bool:
    """Whether the observed value differs from its expectation by at least ``min_effect`` in
    the KPI's bad direction (on the KPI's own scale)."""
    if rule.scale in ("log_count", "log"):
        change = math.expm1(x - expected_x)  # relative change of (1 +) count or latency
    elif rule.effect == "absolute":
        change = x - expected_x
    else:
        change = x / expected_x - 1 if expected_x > 0 else math.inf
    return _is_bad(change, rule.min_effect, rule.direction)


def _is_bad(z: float, threshold: float, direction: Direction) -> bool:
    if direction == "down":
        return z <= -threshold
    if direction == "up":
        return z >= threshold
    return abs(z) >= threshold


def _sustained_bad(
    z: np.ndarray,
    precision: np.ndarray,
    t: int,
    config: DetectorConfig,
    noise: _Noise,
    direction: Direction,
) -> bool:
    """Whether the hours of any ``sustained_hours`` window ending at ``t`` together show a
    shift in the bad direction (their combined score, scaled by its measured spread, passes
    the threshold)."""
    for w in config.sustained_hours:
        if w <= 1 or t + 1 < w:
            continue
        hours = slice(t + 1 - w, t + 1)
        # Each hour's evidence is capped at the threshold, so one extreme hour (flagged or not
        # on its own) cannot make its neighbours look like a lasting shift.
        capped = np.clip(z[hours], -config.threshold, config.threshold)
        score = combined_score(capped, precision[hours]) / noise.sustained_sd.get(w, 1.0)
        # The hour itself must lean the same bad way, so a lasting shift's alert ends with it.
        if _is_bad(score, config.threshold, direction) and z[t] * score >= abs(score):
            return True
    return False


def _window_value(series: KpiSeries, hours: slice, mask: np.ndarray) -> float:
    """The KPI over the flagged hours: pooled for shares, mean for counts and latencies."""
    values = series.value[hours][mask]
    if series.trials is not None:
        trials = series.trials[hours][mask]
        total = float(np.nansum(trials))
        return float(np.nansum(values * trials) / total) if total > 0 else float("nan")
    return float(np.nanmean(values))


def _longest_true_run(flags: np.ndarray) -> int:
    best = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        best = max(best, current)
    return best


def _rule(kpi: str) -> KpiRule:
    try:
        return KPI_RULES[kpi]
    except KeyError:
        raise ValueError(f"kpi: unknown {kpi!r}; known: {', '.join(KPI_RULES)}") from None


def _as_datetime(moment: pd.Timestamp) -> datetime:
    return moment.to_pydatetime()


@dataclass(frozen=True)
class Shading:
    """A period to shade on a plot (an injected incident): which apps, when, and its label."""

    start: datetime
    end: datetime
    apps: tuple[str, ...]
    label: str


def plot_detection(
    scored: Sequence[ScoredSeries],
    alerts: Sequence[Alert],
    path: Path,
    *,
    shadings: Sequence[Shading] = (),
    title: str = "",
) -> Path:
    """PNG of every app-level series (rows: KPIs, columns: apps): observed and expected,
    flagged hours, when alerts were raised, the training window in grey, ``shadings``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    whole_apps = [s for s in scored if s.series.segment == ALL_SEGMENTS] or list(scored)
    apps = sorted({s.series.app for s in whole_apps}, key=_app_order)
    kpis = [k for k in KPI_RULES if any(s.series.kpi == k for s in whole_apps)]
    if not apps or not kpis:
        raise ValueError("scored: nothing to plot")
    labels = sorted({s.label for s in shadings})
    colours = dict(zip(labels, plt.get_cmap("Set2").colors, strict=False))
    figure, axes = plt.subplots(
        len(kpis), len(apps), figsize=(4.2 * len(apps), 2.2 * len(kpis)), squeeze=False
    )
    for col, app in enumerate(apps):
        for row, kpi in enumerate(kpis):
            ax = axes[row][col]
            match = [s for s in whole_apps if s.series.app == app and s.series.kpi == kpi]
            if not match:
                ax.set_visible(False)
                continue
            one = match[0]
            hours = one.series.hours
            ax.plot(hours, one.series.value, lw=0.6, color="tab:blue")
            ax.plot(hours, one.expected, lw=0.6, color="0.35", ls="--")
            unscored = ~one.scored
            if unscored.any():
                ax.axvspan(hours[0], hours[np.flatnonzero(unscored)[-1]], color="0.9", lw=0)
            for shading in shadings:
                if app in shading.apps:
                    ax.axvspan(
                        shading.start, shading.end, color=colours[shading.label], alpha=0.5, lw=0
                    )
            ax.scatter(
                hours[one.flagged], one.series.value[one.flagged], s=7, color="red", zorder=3
            )
            for alert in alerts:
                if alert.app == app and alert.subject == one.series.name:
                    ax.axvline(alert.detected_at, color="red", lw=0.5, alpha=0.6)
            if row == 0:
                ax.set_title(app)
            if col == 0:
                ax.set_ylabel(kpi)
            ax.tick_params(labelsize=6)
            ax.tick_params(axis="x", labelrotation=30)
    handles = [Patch(color=colours[label], alpha=0.5, label=label) for label in labels]
    handles += [
        Line2D([], [], color="tab:blue", lw=1, label="observed"),
        Line2D([], [], color="0.35", ls="--", lw=1, label="expected"),
        Line2D([], [], color="red", marker="o", ls="", label="flagged hour"),
        Line2D([], [], color="red", lw=0.8, label="alert raised"),
        Patch(color="0.9", label="training (not scored)"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def _app_order(app: str) -> int:
    return APPS.index(app) if app in APPS else len(APPS)
