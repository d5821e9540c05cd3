# The two commands: `make run` (main job on local Ray) and `make test` (the test suite).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.raylign-installed

.PHONY: setup run smoke test test-fast bench clean

$(STAMP): pyproject.toml scripts/setup.sh
	bash scripts/setup.sh $(VENV)

setup: $(STAMP)

run: setup
	$(BIN)/raylign train rrhf --config jobs/rrhf_hh.yaml

smoke: setup
	$(BIN)/raylign smoke

test: setup
	$(BIN)/python -m pytest tests -v --durations=40

test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow and not integration"

# the whole benchmark suite (about 40 min on an idle 2-core CPU); TRL is a benchmark-only extra
bench: setup
	$(BIN)/python -c "import trl" 2>/dev/null || $(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/raylign bench

clean:
	rm -rf $(VENV) .pytest_cache runs
