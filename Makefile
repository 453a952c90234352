# The two commands: `make demo` and `make test`. Both work on a fresh clone: they create
# .venv, install the project (pinned by constraints.txt), install Debian's redis-server when
# it is missing and we are root, bring the local Kafka + Redis up and take them down after.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STREAMFER := $(BIN)/streamfer
SPEC ?= examples/card-payments.yaml
EVENTS ?= 20000
# Payments of the demo's adaptation stage (the fraud pattern changes halfway); 0 skips it.
DRIFT_EVENTS ?= 16000
export STREAMFER_HOME ?= $(CURDIR)/.streamfer

.PHONY: demo test install prerequisites lint format up down clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,train]'
	touch $@

install: $(VENV)/.installed

# Java 17 and Maven fetch and run the Kafka broker; redis-server serves the features (redis-cli
# joins the test Redis Cluster);
# promtool checks /metrics and Chromium runs the dashboard's browser test; openssl makes the
# throwaway CA and certificates of `streamfer up --secure`.
prerequisites:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null || missing="$$missing redis-tools"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null || missing="$$missing maven"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing — install with: sudo apt-get install$$missing"; exit 1; \
	  fi; \
	fi

up: install prerequisites
	$(STREAMFER) up

down:
	$(STREAMFER) down

# `exports=$$(…)` keeps streamfer up's exit status (`eval "$$(…)"` would hide a failure).
demo: install prerequisites
	@set -e; exports=$$($(STREAMFER) up); trap '$(STREAMFER) down' EXIT; eval "$$exports"; \
	$(STREAMFER) demo -s $(SPEC) --events $(EVENTS) --drift-events $(DRIFT_EVENTS)

# --secure: the suite also runs its clients against the SASL_SSL listener and Redis TLS.
test: install prerequisites
	@set -e; exports=$$($(STREAMFER) up --secure); trap '$(STREAMFER) down' EXIT; eval "$$exports"; \
	$(BIN)/ruff check streams features inference tests bench; \
	$(BIN)/pytest -p no:cacheprovider -q tests

lint: install
	$(BIN)/ruff check streams features inference tests bench
	$(BIN)/ruff format --check streams features inference tests bench

format: install
	$(BIN)/ruff format streams features inference tests bench
	$(BIN)/ruff check --fix streams features inference tests bench

clean:
	-$(STREAMFER) down
	rm -rf $(VENV) .streamfer examples/models
