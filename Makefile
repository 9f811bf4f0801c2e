# One virtualenv, created on first use; every target installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps standins demo serve test lint fmt check bench-core bench-apply bench-noop bench-cli bench-aws bench-gcp bench-azure bench-store bench-logs bench-logs-live bench-git bench-drift bench-dashboard clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# the Cloud Tasks stand-in pins protobuf<5, wrong for google-cloud-* (it runs on protobuf 7)
	$(BIN)/pip install -q --no-deps gcloud-tasks-emulator==0.6.2
	touch $(STAMP)

install: $(STAMP)

## Debian packages some tests use (graphviz renders `nclav graph --output dot`; chromium runs
## the dashboard's browser tests). Installed when missing and we are root with apt-get (CI is);
## elsewhere those tests skip and say why.
system-deps:
	@if ! command -v dot >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null; \
	  else echo 'graphviz (dot) is not installed: its tests will skip'; fi; \
	fi
	@# Chromium drives the dashboard's browser tests (Playwright launches /usr/bin/chromium).
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo 'chromium is not installed: the dashboard browser tests will skip'; fi; \
	fi

## The npm stand-ins of the Azure runtime's tests (Azurite), pinned by their package-lock;
## reinstalled when the lock changes. Without node/npm those tests skip and say why.
AZURE_STANDINS := tests/standins/azure
$(AZURE_STANDINS)/node_modules/.package-lock.json: $(AZURE_STANDINS)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd $(AZURE_STANDINS) && npm ci --no-audit --no-fund --loglevel=error; \
	else echo 'npm is not installed: the Azure stand-in tests will skip'; fi

## The npm Firestore emulator the GCP tests fall back on where gcloud's is absent (pinned the same way).
GCP_STANDINS := tests/standins/gcp
$(GCP_STANDINS)/node_modules/.package-lock.json: $(GCP_STANDINS)/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd $(GCP_STANDINS) && npm ci --no-audit --no-fund --loglevel=error; \
	else echo 'npm is not installed: without gcloud the Firestore tests will skip'; fi

standins: $(AZURE_STANDINS)/node_modules/.package-lock.json $(GCP_STANDINS)/node_modules/.package-lock.json

## Validate the example trees offline (the local server replaces this as the first command).
demo: $(STAMP)
	$(BIN)/nclav validate examples/product-a/enclaves
	$(BIN)/nclav validate examples/chain/enclaves

## The product: a local server on the embedded SQLite default.
serve: $(STAMP)
	$(BIN)/nclav serve --cloud local

## Lint, type check and every test (the command CI runs).
test: $(STAMP) system-deps standins
	$(BIN)/ruff format --check core functions_aws functions_gcp functions_azure tests scripts
	$(BIN)/ruff check core functions_aws functions_gcp functions_azure tests scripts
	$(BIN)/mypy
	@# pytest exits 5 when it collects nothing: report it instead of failing obscurely.
	$(BIN)/pytest $(PYTEST_ARGS) || { rc=$$?; if [ $$rc -eq 5 ]; then echo 'pytest: no tests collected'; else exit $$rc; fi; }

fmt: $(STAMP)
	$(BIN)/ruff format core functions_aws functions_gcp functions_azure tests scripts
	$(BIN)/ruff check --fix core functions_aws functions_gcp functions_azure tests scripts

check: test

## Load + validate + plan a synthetic 1,000 x 10 tree against PyYAML's C loader.
bench-core: $(STAMP)
	$(BIN)/python scripts/bench_core.py

## Apply makespan of a 50-partition DAG (real terraform) at 1, 2, 4 workers vs the lower bound.
bench-apply: $(STAMP)
	$(BIN)/python scripts/bench_apply.py

## A no-op apply of the 1,000 x 10 synthetic tree (applied state seeded) vs its dry-run.
bench-noop: $(STAMP)
	$(BIN)/python scripts/bench_noop.py

## `nclav --help` cold start, and `nclav diff` (pack + upload + dry-run) of the 1,000 x 10 tree.
bench-cli: $(STAMP)
	$(BIN)/python scripts/bench_cli.py

## AWS handler import times (cold-start floor) and DynamoDB requests per step and per no-op apply.
bench-aws: $(STAMP)
	$(BIN)/python scripts/bench_aws.py
	$(BIN)/python scripts/bench_fan_out.py

## GCP entry points: cold import, first request against the stand-ins, size vs functions_aws.
bench-gcp: $(STAMP)
	$(BIN)/python scripts/bench_gcp.py

## Azure function app cold import and first request (stand-ins), functions_azure/ line count.
bench-azure: $(STAMP)
	$(BIN)/python scripts/bench_azure.py

## State-store requests per step of one engine workload on DynamoDB, Firestore and Cosmos DB.
bench-store: $(STAMP)
	$(BIN)/python scripts/bench_store.py

## Blob-store requests per 1,000 IaC log lines at several output rates (batched log chunks).
bench-logs: $(STAMP)
	$(BIN)/python scripts/bench_logs.py

## Live-log latency (real terraform, a line every 100 ms): p95 with SSE and with polling.
bench-logs-live: $(STAMP)
	$(BIN)/python scripts/bench_live_logs.py --shipped

## Git source: webhook answer time, push-to-plan vs clone + validate, incremental fetch bytes.
bench-git: $(STAMP)
	$(BIN)/python scripts/bench_git.py

## Drift checks of 200 partitions at concurrency 2: longest apply wait for a check; versions.
bench-drift: $(STAMP)
	$(BIN)/python scripts/bench_drift.py

## The dashboard in headless Chromium: overview first contentful paint of the 1,000 x 10 tree,
## graph of 100 enclaves, transfer size of the overview with every asset.
bench-dashboard: $(STAMP) system-deps
	$(BIN)/python scripts/bench_dashboard.py

## The Lambda zip of the api, worker and schedule functions (dist/nclav-aws-lambda.zip, what
## infra/aws's lambda_zip points at), built for the Lambda platform whatever the host, reproducibly.
## AWS_PYTHON and AWS_ARCH must match infra/aws's runtime and architecture variables.
AWS_PYTHON ?= 3.11
AWS_ARCH ?= x86_64
aws-package: $(STAMP)
	$(BIN)/python scripts/aws_package.py --python-version $(AWS_PYTHON) --architecture $(AWS_ARCH) --out dist/nclav-aws-lambda.zip

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
