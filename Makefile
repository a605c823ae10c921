# Thin wrappers the README names. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint format bench-simulator bench-features bench-train bench-train-amazon bench-train-czech bench-train-sim bench-training-throughput bench-serving bench-tools bench-catalogue bench ab clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned exactly (==2.13.0): pip takes the CPU wheel on disk, never a CUDA build.
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

## The main job end to end: simulate, validate, build features, feast apply, materialise, read online.
demo: $(STAMP)
	$(BIN)/persona demo

## The test suite (real Redis, real Feast repos in temp dirs, real Parquet/DuckDB).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Simulator at bank scale: 1M customers x 90 days, wall time and peak RSS -> bench/results/.
bench-simulator: $(STAMP)
	$(BIN)/python bench/simulator_scale.py --customers 1000000 --days 90 --seed 0 --out data/bench_sim

## Feature store on 1M simulated customers x 7 days (bank cached under data/bench_features*), Redis db 13:
## stock `feast materialize` vs the bulk materialiser on the same 20k-customer window (byte-identical),
## bulk at 100k and 1M customers; online reads Feast SDK vs FastOnlineReader, 1 and 100 customers.
## About 4 minutes once the bank is cached (its first build adds about 3).
bench-features: $(STAMP)
	$(BIN)/python bench/feature_store.py --customers 1000000 --days 7 --seed 7 --data-dir data/bench_features

## Training benchmarks (transformer beside its baselines; JSON in bench/results/, reports under data/bench/).
## Amazon Games, the SASRec paper's protocol: about 30 minutes on 2 cores.
bench-train-amazon: $(STAMP)
	$(BIN)/python bench/train_benchmark.py amazon_games --seed 42

## Czech bank (PKDD'99): hold out each client's last-acquired product. About 2 minutes.
bench-train-czech: $(STAMP)
	$(BIN)/python bench/train_benchmark.py czech_bank --seed 42

## Simulated bank, 30k customers x 90 days: logged impressions, baselines and the ground-truth oracle.
bench-train-sim: $(STAMP)
	$(BIN)/python bench/train_benchmark.py simulated_bank --customers 30000 --days 90 --seed 42

bench-train: bench-train-czech bench-train-sim bench-train-amazon

## Ray Train vs one plain torch process (same model, rows, seeds; 2 threads): samples/s, start-up,
## time to validation NDCG@10 0.30 on 10k Amazon Games customers; peak RSS of both and of the
## simulator at 100k x 30 and 1M x 7 days. About 3 minutes (more while others share the cores).
bench-training-throughput: $(STAMP)
	$(BIN)/python bench/training_throughput.py --seed 42

## Load generator and front for the serving benchmark (Debian packages; root installs them).
bench-tools:
	command -v wrk >/dev/null && command -v haproxy >/dev/null || \
		(apt-get update -qq && apt-get install -y -qq wrk haproxy >/dev/null)

## Serving over HTTP with wrk: the shipped Serve deployment (colocated, HAProxy) against a naive
## Serve graph, the fused placement and one uvicorn process, 1-64 clients; a py-spy profile of
## the hot path; per-stage times and replica memory (Redis db 3). About 6 minutes.
bench-serving: $(STAMP) bench-tools
	$(BIN)/python bench/serving_throughput.py

## Request-path cost against catalogue size: 50 vs 5,000 products (Redis db 4). About 2 minutes.
bench-catalogue: $(STAMP)
	$(BIN)/python bench/catalogue_scale.py

## Durable event ingestion: EventProcessor.ingest at 1-8 threads x 1-100 events, then /v1/events
## of the real Serve app at batches of 100 and 1000; Parquet log counted against every ack
## (lost must be 0). Redis db 6, data/bench_events. About 2 minutes.
.PHONY: bench-events
bench-events: $(STAMP)
	$(BIN)/python bench/events_ingest.py --duration 3 --http-duration 12 --http-batches 100 1000

## The performance suite (<= 15 minutes once the 1M-customer bank is cached): every figure
## beside its reference from the same run; JSON in bench/results/, the table in README.md.
bench: bench-serving bench-features bench-events bench-training-throughput bench-catalogue
	$(BIN)/python bench/report.py

## Reliability and security figures: the fault tests (Redis stopped and hung under load, a replica
## killed, an event flood during an outage, bad model versions), rate limits, cross-app isolation,
## pseudonymised logs, schemathesis over the OpenAPI spec and the property tests, with their
## figures in bench/results/reliability.json (the same tests run in `make test`). About 6 minutes.
.PHONY: reliability soak
reliability: $(STAMP)
	PERSONA_TEST_FIGURES=bench/results/reliability.json $(BIN)/pytest -q tests/serving/test_faults.py tests/serving/test_api_fuzz.py tests/serving/test_bad_input.py tests/serving/test_properties.py tests/serving/test_rate_limit.py

## Soak: the shipped deployment (colocated, 2 replicas, HAProxy) under mixed recommendations and
## event batches from 8 closed-loop clients for 10 minutes; memory growth, errors, events lost.
## Redis db 3, data/bench_serving. About 14 minutes.
soak: $(STAMP) bench-tools
	$(BIN)/python bench/soak.py --minutes 10

## The online A/B experiment, closed loop: a 30k-customer bank x 90 days through the normal
## path (features in Redis db 9, Ray Train, registry), then 14 simulated days of customers
## calling the live endpoint (one uvicorn process; --server ray for Ray Serve), outcomes from
## the hidden truth back through /v1/events, `persona experiment analyze`, off-policy and
## guardrail checks. JSON in bench/results/ab_experiment.json, HTML under data/ab/ab/.
ab: $(STAMP)
	$(BIN)/python bench/ab_experiment.py --customers 30000 --bank-days 90 --epochs 5 --traffic-days 14 --seed 42

clean:
	rm -rf data/demo data/ab data/bench_sim data/bench_features data/bench_features_window* data/bench_features_registries data/bench data/bench_serving data/bench_events data/bench_catalogue_* .pytest_cache
