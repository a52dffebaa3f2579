# make repro | make explore | make test | make docs | make setup | make ui | make bench   (VENV=path: another environment; PROFILE=paper)
VENV ?= .venv
PYTHON ?= python3.11
PORT ?= 5000
EXPLORE_PORT ?= 8000
LIMIT ?= 120
PY := $(VENV)/bin/python
STAMP := $(VENV)/.monosem-setup
export PATH := $(abspath $(VENV))/bin:$(PATH)
export DVC_NO_ANALYTICS := true
export MLFLOW_DISABLE_TELEMETRY := true
export NO_MKDOCS_2_WARNING := 1

.PHONY: setup repro explore test docs ui bench profiles

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $(STAMP)

setup: $(STAMP)

# validate.py checks params.yaml in full (and memory, and the store) first: DVC deletes a stage's outputs before
# running it, so a bad value must be found before `dvc repro` starts.
# It prints the projected time of the stages about to run and stops above LIMIT minutes (0: no limit).
# PROFILE=paper copies profiles/paper.yaml over params.yaml first (git keeps the old one; refused when
# params.yaml has uncommitted edits, so nothing is lost).
repro: setup
ifneq ($(PROFILE),)
	@git diff --quiet -- params.yaml || { echo "error: params.yaml has uncommitted edits; commit or stash them before PROFILE=$(PROFILE)"; exit 1; }
	cp profiles/$(PROFILE).yaml params.yaml
endif
	$(PY) pipeline/validate.py --limit $(LIMIT)
	dvc repro

# The explorer the report stage writes: its address on disk (it needs no server), and the same pages served on
# loopback until Ctrl-C (by any Python's standard library: nothing to install).
explore:
	@test -f reports/explorer/index.html || { echo "no explorer yet: make repro first"; exit 1; }
	@echo "explorer: file://$(CURDIR)/reports/explorer/index.html"
	@echo "served at http://127.0.0.1:$(EXPLORE_PORT)/ (Ctrl-C stops)"
	@python3 -m http.server --bind 127.0.0.1 --directory reports/explorer $(EXPLORE_PORT)

# The layers' contracts (pyproject.toml's [tool.importlinter]), the lint, the docs site (a broken link or a page
# missing from the navigation fails), then the tests: two workers, a test file each at a time (the end-to-end
# files are mostly stage start-up, one core each).
test: setup
	PYTHONPATH=src $(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mkdocs build --strict --quiet
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: setup
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/peer.py
	$(PY) benchmarks/sae_throughput.py

# The MLflow UI over the project's own store, on loopback only; prints the runs table of the experiment.
ui: setup
	@$(PY) -c "import sqlite3, yaml, pathlib; \
	name = yaml.safe_load(open('params.yaml'))['tracking']['experiment']; \
	db = pathlib.Path('mlflow.db'); \
	row = db.exists() and sqlite3.connect(db).execute('select experiment_id from experiments where name=?', (name,)).fetchone(); \
	print(f'runs: http://127.0.0.1:$(PORT)/#/experiments/{row[0]}/runs' if row else 'no runs yet: make repro first')"
	mlflow server --host 127.0.0.1 --port $(PORT) --backend-store-uri sqlite:///$(CURDIR)/mlflow.db \
		--default-artifact-root $(CURDIR)/mlartifacts

# The docs site (docs/, mkdocs.yml), served on loopback until Ctrl-C.
docs: setup
	$(VENV)/bin/mkdocs serve -a 127.0.0.1:8001

# The generated profiles (profiles/regime.yaml, profiles/ladder.yaml) from params.yaml, by profiles/make.py's rules.
profiles:
	$(PY) profiles/make.py
