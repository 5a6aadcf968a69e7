# Insurance-fund processor. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONHASHSEED ?= 0

.DEFAULT_GOAL := help
.PHONY: help install native test test-unit test-integration lint format golden bench bench-core bench-recovery soak run demo broker \
        rebuild audit browser \
        kafka-up kafka-down kafka-status kafka-purge cluster-up cluster-down cluster-status cluster-purge \
        soak-cluster clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The hot modules (processor/native.py), compiled by mypyc from their source; PROCESSOR_COMPILE=0
# (or no C compiler) leaves them interpreted: same results, slower.
NATIVE_SOURCES := processor/codec/decoding.py processor/codec/encoding.py processor/domain/drawdown.py \
                  processor/domain/events.py processor/domain/fold.py processor/domain/ledger.py \
                  processor/domain/record.py processor/domain/state.py processor/pipeline.py \
                  processor/codec/_scan.c
NATIVE_STAMP := build/native.stamp
PROCESSOR_COMPILE ?= 1

$(NATIVE_STAMP): $(STAMP) $(NATIVE_SOURCES) processor/native.py setup.py
	@mkdir -p build
	@find processor -name "*.cpython-*.so" -delete  # also a module no longer compiled: its stale extension would shadow it
	@if [ "$(PROCESSOR_COMPILE)" = 0 ]; then echo "PROCESSOR_COMPILE=0: the hot modules stay interpreted"; \
	else echo "compiling the hot modules with mypyc ..."; \
	  PROCESSOR_COMPILE=1 $(PY) setup.py --quiet build_ext --inplace > build/native.log 2>&1 \
	  && touch $(patsubst %.c,%.cpython-*.so,$(NATIVE_SOURCES:.py=.cpython-*.so)) processor/_native__mypyc.cpython-*.so \
	  || { tail -20 build/native.log; echo "warning: mypyc could not compile the hot modules (build/native.log): they stay interpreted"; \
	       find processor -name "*.cpython-*.so" -delete; }; fi
	@touch $@

native: $(NATIVE_STAMP) ## compile the hot modules with mypyc (make install does; PROCESSOR_COMPILE=0: keep them interpreted)

install: $(STAMP) $(NATIVE_STAMP) ## create .venv, install the package with its test extras (pinned), compile the hot modules

test: install lint browser ## lint, then run every test (starts a private Kafka broker unless KAFKA_BOOTSTRAP_SERVERS is set)
	$(PY) -m pytest -q

browser: ## install Debian's chromium for the dashboard's browser test if missing (as root, with apt-get); else that test skips
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || [ -n "$$CHROMIUM" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (apt-get) for the dashboard's browser test ..."; \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
	    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; } \
	  || echo "could not install chromium: the browser test will be skipped"; \
	else echo "no chromium, and no apt-get as root to install it: the browser test will be skipped"; fi

test-unit: install ## run the tests that need no broker
	$(PY) -m pytest -q -m "not integration"

test-integration: install browser ## run the tests against a real broker
	$(PY) -m pytest -q -m integration

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check processor tests bench soak testkit
	$(VENV)/bin/ruff format --check processor tests bench soak testkit
	$(VENV)/bin/mypy

format: install ## apply ruff's formatting and fixable lints
	$(VENV)/bin/ruff format processor tests bench soak testkit
	$(VENV)/bin/ruff check --fix processor tests bench soak testkit

golden: install ## regenerate tests/golden expected outputs from their recorded inputs (review the diff!)
	$(PY) -m tests.golden.regenerate

bench-core: install broker ## decode + fold + encode and file replay over 1M generated fills; topic replay with --jobs 1 and 2
	$(PY) -m bench.core

bench: install broker ## worker throughput vs a bare aiokafka pipe, latency, recovery (BENCH_RECOVERY=0: skip it), 100 dashboard streams vs none; then bench-core
	$(PY) -m bench.stream --count 200000 $(if $(filter 0,$(BENCH_RECOVERY)),--skip recovery)
	$(PY) -m bench.core

bench-recovery: install broker ## SIGKILL a worker holding 1M fills, restart it: seconds to /health 200, state, peak RSS
	$(PY) -m bench.stream --only recovery

soak: install ## the long crash-proof run: 50 SIGKILLs, rebalances, rolling restarts, broker restarts, 10k hostile messages; prints a table
	$(PY) -m soak

soak-cluster: install ## the failover soak on a private 3-node cluster: leader and coordinator kills, rolling broker restarts; 2 workers; prints a table with the longest stalls
	$(PY) -m soak --cluster

broker: # start the local broker unless KAFKA_BOOTSTRAP_SERVERS points at one
	@if [ -z "$$KAFKA_BOOTSTRAP_SERVERS" ]; then bash scripts/kafka.sh up; fi

run: install broker ## start the local broker (unless KAFKA_BOOTSTRAP_SERVERS is set), create topics, run the worker
	$(PY) -m processor worker

demo: install broker ## the same plus a simulated calm-then-crash feed and a live view of the funds
	$(PY) -m processor demo

rebuild: install broker ## rebuild the funds from history as NEW_APP_ID, publishing to NEW_APP_ID.-prefixed topics
	@test -n "$(NEW_APP_ID)" || { echo "usage: make rebuild NEW_APP_ID=insurance-fund-v2 (see README: Rebuild)"; exit 2; }
	APP_ID=$(NEW_APP_ID) WEB_PORT=$${REBUILD_WEB_PORT:-6067} DATA_DIR=var/$(NEW_APP_ID) \
	DELTAS_TOPIC=$(NEW_APP_ID).$${DELTAS_TOPIC:-insurance-fund-deltas} \
	ADL_TOPIC=$(NEW_APP_ID).$${ADL_TOPIC:-adl-triggers} \
	DLQ_TOPIC=$(NEW_APP_ID).$${DLQ_TOPIC:-liquidation-fills-dlq} \
	$(PY) -m processor worker

audit: install ## verify the live ledger against a replay of the input (WORKER_URL=... to compare GET /funds too)
	$(PY) -m processor audit $(if $(WORKER_URL),--worker-url $(WORKER_URL))

kafka-up: ## start the local Kafka 4.0 broker on 127.0.0.1:9092 (jars fetched with Maven on first use)
	bash scripts/kafka.sh up

kafka-down: ## stop the local broker
	bash scripts/kafka.sh down

kafka-status: ## is the local broker running?
	bash scripts/kafka.sh status

kafka-purge: ## stop the local broker and delete its data (jars stay cached)
	bash scripts/kafka.sh down --purge

cluster-up: ## start a local 3-node Kafka cluster (KRaft; free ports, or KAFKA_CLUSTER_PORTS) and print the KAFKA_BOOTSTRAP_SERVERS to use
	bash scripts/cluster.sh up

cluster-down: ## stop the local 3-node cluster
	bash scripts/cluster.sh down

cluster-status: ## is each node of the local cluster running?
	bash scripts/cluster.sh status

cluster-purge: ## stop the local cluster and delete its data, logs and ports (jars stay cached)
	bash scripts/cluster.sh down --purge

clean: ## remove the virtualenv and caches (not the Kafka jars)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis var build
	find processor -name "*.cpython-*.so" -delete
