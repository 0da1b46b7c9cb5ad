# Two commands: `make run` opens the app on the demo bundle, `make test` runs the tests.
# Also: `make test-fast` (no slow or browser tests, the inner loop), `make lint` (ruff, as CI runs it).
# Both create .venv when it is missing or stale (requirements.txt or pyproject.toml changed).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS_DIR ?= runs
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1
# Idle OpenMP threads sleep instead of spinning: on a small shared machine the
# spinning threads of torch and faiss steal the cores the work needs.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install run test test-fast lint demo bench clean

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@if [ ! -x $(BIN)/python ]; then $(PYTHON) -m venv $(VENV); fi
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	@if [ -f $(RUNS_DIR)/demo/.complete ]; then echo "demo bundle present in $(RUNS_DIR)/demo"; \
	elif [ -f train/build_demo.py ]; then $(BIN)/python train/build_demo.py --out $(RUNS_DIR)/demo; \
	else echo "no demo builder yet (train/build_demo.py); the app opens a placeholder"; fi

run: demo
	@# Leaflet for the offline folium maps, copied from xstatic-leaflet into ./static (served at /app/static/; not committed).
	$(BIN)/python -c "from swclip.viz.maps import install_leaflet; install_leaflet('static')"
	$(BIN)/streamlit run app.py --server.headless true -- --runs-dir $(RUNS_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -m "not slow and not browser"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m benchmarks.losses

clean:
	rm -rf $(VENV) .pytest_cache
