# The README's commands. First use builds .venv/ from the pinned requirements.txt; later uses reuse it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
REPOS  ?=
OUT    ?=
PORT   ?= 8080
WORKERS ?= 2
TEST_WORKERS ?= 2

.PHONY: venv run test up celery stop bench clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-build-isolation --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

## make run [REPOS=a,b,c] [OUT=dir]: the whole pipeline through Airflow on the embedded Postgres
run: $(STAMP)
	@$(BIN)/python scripts/airflow_local.py run --repos "$(REPOS)" $(if $(OUT),--out "$(OUT)")

## make test [TEST_WORKERS=2]: the whole test suite (CI runs exactly this), in TEST_WORKERS processes
## (pytest-xdist, whole files to a process: each has its own embedded server and data folder)
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

## make up [PORT=8080]: the Airflow web UI on http://localhost:PORT with the DAGs, on the same embedded database
up: $(STAMP)
	@$(BIN)/python scripts/airflow_local.py up --port $(PORT)

## make celery [PORT=8080] [WORKERS=2]: the same with CeleryExecutor, WORKERS Celery workers, local Redis as broker; the Procfile run by honcho
celery: $(STAMP)
	@$(BIN)/python scripts/airflow_local.py celery --port $(PORT) --workers $(WORKERS)

## make stop: stop the embedded Postgres server (it is left running between commands)
stop: $(STAMP)
	@$(BIN)/codepairs db stop

## make bench REPO=path: crawl+extract+store against raw `git log -p` on the same repository
bench: $(STAMP)
	$(BIN)/python benchmarks/crawl_vs_git_log.py $(REPO)

clean:
	rm -rf .data
