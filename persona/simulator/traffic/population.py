"""The simulated customers as they stand at the end of the simulated bank's window.

Their hidden behaviour (login rate, app mix, devices, pay day, latent traits) is regenerated
from the bank's :class:`SimulationConfig` with the simulator's own seeded streams, so it is
exactly what produced the logged history; holdings, recent-impression fatigue and days since
the last salary or matured deposit are rebuilt from the simulated tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np

from persona.layout import DataLayout, parquet_glob
from persona.simulator.catalogue import Catalogue, eligible
from persona.simulator.config import SimulationConfig
from persona.simulator.customers import generate_customers
from persona.simulator.daily_loop import _days_since_last_pay_day, chunk_rngs
from persona.simulator.ground_truth import PreferenceModel
from persona.simulator.run import SIMULATION_CONFIG_FILE

#: Days since an event that never happened (the simulator's convention).
NEVER_DAYS = 365.0


def simulation_config(data_dir: Path) -> SimulationConfig:
    """The config the bank under ``data_dir`` was simulated with."""
    path = DataLayout(data_dir).ground_truth / SIMULATION_CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"data-dir: {path} not found; simulate the bank with `persona data simulate`"
        )
    return SimulationConfig.model_validate(json.loads(path.read_text()))


@dataclass(eq=False)
class Population:
    """Every simulated customer as column arrays (row i = ``customer_id[i]``), plus the state
    the traffic simulation updates: ``held``, ``fatigue``, ``days_since_*``."""

    config: SimulationConfig
    catalogue: Catalogue
    model: PreferenceModel
    customer_id: np.ndarray  # (n,) int64, ascending
    is_corporate: np.ndarray  # (n,) bool
    consent_marketing: np.ndarray  # (n,) bool
    login_rate: np.ndarray  # (n,) float32 per day
    app_weights: np.ndarray  # (n, 4) float32
    mobile_device: np.ndarray  # (n,) int8 index into domain.DEVICES
    pay_day: np.ndarray  # (n,) int8, 0 = none
    traits: np.ndarray  # (n, 8) float32, hidden
    eligible: np.ndarray  # (n, P) bool: type, age, income, KYC, suitability
    held: np.ndarray  # (n, P) bool
    fatigue: np.ndarray  # (n, P) float32 decayed count of recent impressions
    days_since_salary: np.ndarray  # (n,) float32
    days_since_maturity: np.ndarray  # (n,) float32

    @property
    def first_day(self) -> date:
        """The first day after the simulated window: day 0 of the traffic."""
        return self.config.end_date + timedelta(days=1)

    def rows_of(self, customer_ids: np.ndarray) -> np.ndarray:
        """Row indices of ``customer_ids``; an unknown id raises ``ValueError``."""
        ids = np.asarray(customer_ids, dtype=np.int64)
        rows = np.searchsorted(self.customer_id, ids)
        rows = np.minimum(rows, len(self.customer_id) - 1)
        bad = self.customer_id[rows] != ids
        if bad.any():
            raise ValueError(f"customer_id: unknown customer(s) {ids[bad][:5].tolist()}")
        return rows


def load_population(data_dir: Path) -> Population:
    """Regenerate the customers of the bank under ``data_dir`` and rebuild their state at the
    end of its window; raises ``ValueError`` if the regenerated customers do not match the
    simulated ``customers`` table (the bank was simulated with other code or another config)."""
    config = simulation_config(data_dir)
    catalogue = Catalogue()
    model = PreferenceModel.default(catalogue)
    blocks = []
    for chunk in range(config.num_chunks):
        first = chunk * config.chunk_size
        n = min(config.chunk_size, config.customers - first)
        rng_customers, _, _ = chunk_rngs(config.seed, chunk)
        blocks.append(
            generate_customers(
                rng_customers, first + 1, n, config.corporate_share, config.start_date
            )
        )

    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(b, name) for b in blocks])

    customer_id = cat("customer_id").astype(np.int64)
    _check_against_table(data_dir, customer_id, cat("consent_marketing"))
    is_corporate, age, income, kyc, risk = (
        cat(n) for n in ("is_corporate", "age", "income", "kyc", "risk")
    )
    can_buy = eligible(
        catalogue,
        is_corporate=is_corporate,
        age=age,
        income_index=income,
        kyc_level=kyc,
        risk_index=risk,
    )
    pay_day = cat("pay_day")
    first_day = config.end_date + timedelta(days=1)
    held, fatigue, since_maturity = _state_from_tables(
        data_dir, config, catalogue, model, customer_id
    )
    return Population(
        config=config,
        catalogue=catalogue,
        model=model,
        customer_id=customer_id,
        is_corporate=is_corporate.astype(bool),
        consent_marketing=cat("consent_marketing").astype(bool),
        login_rate=cat("login_rate"),
        app_weights=cat("app_weights"),
        mobile_device=cat("mobile_device"),
        pay_day=pay_day,
        traits=cat("traits"),
        eligible=can_buy,
        held=held,
        fatigue=fatigue,
        days_since_salary=_days_since_last_pay_day(pay_day, first_day),
        days_since_maturity=since_maturity,
    )


def _check_against_table(data_dir: Path, customer_id: np.ndarray, consent: np.ndarray) -> None:
    glob = parquet_glob(DataLayout(data_dir).raw_table("customers"))
    with duckdb.connect() as con:
        table = con.execute(
            f"SELECT customer_id, consent_marketing FROM read_parquet('{glob}') ORDER BY 1"
        ).fetchnumpy()
    if not (
        np.array_equal(table["customer_id"], customer_id)
        and np.array_equal(table["consent_marketing"], consent)
    ):
        raise ValueError(
            f"data-dir: the customers regenerated from {SIMULATION_CONFIG_FILE} differ from "
            "raw/customers; simulate the bank again"
        )


def _state_from_tables(
    data_dir: Path,
    config: SimulationConfig,
    catalogue: Catalogue,
    model: PreferenceModel,
    customer_id: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Holdings open after the window, fatigue (each impression decayed once per day to the end
    of the window, as the daily loop does) and days since a term product matured."""
    layout = DataLayout(data_dir)
    end = config.end_date + timedelta(days=1)  # exclusive
    n, p = len(customer_id), catalogue.size
    index = {pid: i for i, pid in enumerate(catalogue.product_ids)}
    term = [pr.product_id for pr in catalogue.products if pr.term_days > 0]
    decay = float(model.params.fatigue_decay_per_day)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        holdings = con.execute(
            f"""SELECT customer_id, product_id FROM read_parquet(
                    '{parquet_glob(layout.raw_table("holdings"))}')
                WHERE opened_at < $end AND (closed_at IS NULL OR closed_at >= $end)""",
            {"end": end},
        ).fetchnumpy()
        matured = con.execute(
            f"""SELECT customer_id, date_diff('day', max(closed_at)::DATE, $end::DATE) AS days
                FROM read_parquet('{parquet_glob(layout.raw_table("holdings"))}')
                WHERE closed_at < $end AND list_contains($term, product_id)
                GROUP BY customer_id""",
            {"end": end, "term": term},
        ).fetchnumpy()
        shown = con.execute(
            f"""SELECT customer_id, product_id,
                       sum(pow($decay, date_diff('day', event_timestamp::DATE, $end::DATE)))
                           AS fatigue
                FROM read_parquet('{parquet_glob(layout.raw_table("events"))}',
                                  hive_partitioning = false)
                WHERE event_type = 'impression'
                GROUP BY customer_id, product_id""",
            {"end": end, "decay": decay},
        ).fetchnumpy()
    rows = np.searchsorted(customer_id, holdings["customer_id"])
    held = np.zeros((n, p), dtype=bool)
    held[rows, [index[x] for x in holdings["product_id"]]] = True
    fatigue = np.zeros((n, p), dtype=np.float32)
    rows = np.searchsorted(customer_id, shown["customer_id"])
    fatigue[rows, [index[x] for x in shown["product_id"]]] = shown["fatigue"]
    since = np.full(n, NEVER_DAYS, dtype=np.float32)
    since[np.searchsorted(customer_id, matured["customer_id"])] = matured["days"]
    return held, fatigue, since
