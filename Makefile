# streamwatch: the two commands of the quick start are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: venv tools k8s-tools test lint pytest fuzz demo example-model gutentag-suite kafka-start kafka-stop kafka-status clean

# The venv is rebuilt when pyproject.toml changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[train,dev]"
	touch $(STAMP)

venv: $(STAMP)

# Prometheus and promtool (Debian's package) check the metrics and the alert rules.
tools:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null \
		&& command -v openssl >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && \
		$$SUDO apt-get install -y -q --no-install-recommends prometheus openssl; }

# helm, kustomize and the manifest validator (deploy/k8s/validate), built from the Go module
# proxy into .build/tools for tests/integration/test_k8s_manifests.py (minutes the first time).
k8s-tools:
	deploy/k8s/tools.sh

# The whole suite: lint, type check, unit tests and the tests against a real local Kafka,
# a real Prometheus and the Kubernetes tools.
# The Go tools build in the background meanwhile (minutes on a fresh machine, mostly while the
# suite waits on brokers); the manifest tests wait for that build (a lock), and fail if it did.
test: venv tools
	mkdir -p .build && (deploy/k8s/tools.sh > .build/k8s-tools.log 2>&1 &)
	$(BIN)/python deploy/kafka/localkafka.py fetch
	$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check streamwatch tests deploy bench docs
	$(BIN)/ruff format --check streamwatch tests deploy bench docs
	$(BIN)/mypy

pytest: venv
	$(BIN)/python -m pytest

# The property-based fuzz suites with 100 times the examples `make test` gives them (minutes).
fuzz: venv
	HYPOTHESIS_PROFILE=long $(BIN)/python -m pytest tests/fuzz

# Broker, model, daemon and live anomalies on this machine; Ctrl-C stops it all.
demo: venv
	$(BIN)/python deploy/demo.py

# Rebuild the shipped example model from synthetic data (see models/example/MODEL_CARD.md).
example-model: venv
	mkdir -p .build
	$(BIN)/streamwatch generate --streams 200 --length 4032 --anomalies-per-stream 0 --seed 1 \
		--out .build/example-history.csv
	$(BIN)/streamwatch train --config models/example.train.yaml

# The held-out GutenTAG suite for bench/quality_gutentag.py.  GutenTAG pins SciPy and brings
# heavy dependencies, so it gets a venv of its own, apart from streamwatch's.
GT_VENV := .build/gutentag-venv
gutentag-suite:
	test -x $(GT_VENV)/bin/python || $(PYTHON) -m venv $(GT_VENV)
	$(GT_VENV)/bin/pip install --quiet timeeval-gutenTAG==1.5.0
	$(GT_VENV)/bin/python bench/gutentag_suite.py --seed 7 --out .build/gutentag/suite-seed7.npz
	$(GT_VENV)/bin/python bench/gutentag_suite.py --seed 8 --out .build/gutentag/suite-seed8.npz

kafka-start: venv
	$(BIN)/python deploy/kafka/localkafka.py start
kafka-stop:
	$(PYTHON) deploy/kafka/localkafka.py stop
kafka-status:
	$(PYTHON) deploy/kafka/localkafka.py status

clean:
	rm -rf $(VENV) .build .demo deploy/kafka/.run .pytest_cache .ruff_cache .mypy_cache .hypothesis
