# Every target installs what it needs first: a fresh clone needs only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# What is installed: ochinai, its runtime and the local S3 server (make run-local); then
# the test tools on top (make test and every other target).
LOCAL_STAMP := $(VENV)/.installed-local
STAMP       := $(VENV)/.installed-stamp
# pip's own output: shown when a step fails, kept here either way.
INSTALL_LOG := $(VENV)/install.log
# Pinned versions with hashes, resolved from pyproject.toml by `make lock`: the runtime's
# (the image installs these), with the local S3 server and mail sink (make run-local), and
# with the test tools (make install); each one's pins are the one before's.
LOCK       := requirements.lock
LOCAL_LOCK := requirements-local.lock
TEST_LOCK  := requirements-test.lock
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 \
	--generate-hashes --no-header --quiet

# $(call step,WHAT,COMMAND): one line that says WHAT and, once done, how long it took;
# COMMAND's output goes to INSTALL_LOG, and its end is shown when it fails.
define step
	@start=$$(date +%s); printf '  %s ...' "$(1)"; \
	if ( $(2) ) >>$(INSTALL_LOG) 2>&1; then echo " $$(( $$(date +%s) - start )) s"; \
	else echo " failed:"; tail -n 40 $(INSTALL_LOG); echo "(all of it in $(INSTALL_LOG))"; exit 1; fi
endef

.PHONY: install install-local lock readme rules test chaos lint bench run-local clean-local clean

install: $(STAMP)

install-local: $(LOCAL_STAMP)

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ochinai needs Python 3.11 or newer")'
	@mkdir -p $(VENV)
	@echo "making $(VENV) (pip's output goes to $(INSTALL_LOG))"
	$(call step,a virtual environment with a current pip,$(PYTHON) -m venv $(VENV) && $(BIN)/python -m pip install --quiet --upgrade pip)

$(LOCAL_STAMP): pyproject.toml $(LOCK) $(LOCAL_LOCK) docker/install_lock.py | $(BIN)/python
	@echo "installing the runtime's packages into $(VENV), pinned by $(LOCK)"
	@$(BIN)/python docker/install_lock.py $(LOCK) --log $(INSTALL_LOG)
	@echo "installing the local S3 server and mail sink, pinned by $(LOCAL_LOCK)"
	@$(BIN)/python docker/install_lock.py $(LOCAL_LOCK) --skip $(LOCK) --log $(INSTALL_LOG)
	$(call step,ochinai itself (editable),$(BIN)/python -m pip install --quiet --no-deps -e .)
	@touch $@

$(STAMP): pyproject.toml $(TEST_LOCK) $(LOCAL_STAMP)
	@echo "installing the test tools into $(VENV), pinned by $(TEST_LOCK)"
	@$(BIN)/python docker/install_lock.py $(TEST_LOCK) --skip $(LOCAL_LOCK) --log $(INSTALL_LOG)
	$(call step,a check that everything installed fits together,$(BIN)/python -m pip check)
	@touch $@

# After a change to the dependencies in pyproject.toml: resolve the lock files again.
lock: install
	$(UV_COMPILE) -o $(LOCK)
	$(UV_COMPILE) --extra local --constraint $(LOCK) -o $(LOCAL_LOCK)
	$(UV_COMPILE) --extra test --constraint $(LOCAL_LOCK) -o $(TEST_LOCK)

# After a setting changed: write docs/settings.md's tables again from the registry.
readme: install
	$(BIN)/python -m tests.test_readme

# After an alert rule changed in k8s/monitoring/ochinai-rules.yaml: write the
# PrometheusRule (k8s/monitoring/prometheusrule.yaml) again from it.
rules: install
	$(BIN)/python -m tests.test_metrics

# The unit and integration tests on TEST_WORKERS processes, then the chaos suite's quick
# subset in one: its job runs want the cores (a lock renewal starved past its deadline
# fails a run), and its table is counted in one process.
TEST_WORKERS ?= 2
test: install
	@echo "make test: the tests but the chaos suite, on $(TEST_WORKERS) workers"
	$(BIN)/python -m pytest -m "not chaos" -n $(TEST_WORKERS)
	@echo "make test: the chaos suite's quick subset (make chaos runs it all)"
	$(BIN)/python -m pytest -m chaos tests/chaos

# Kill, stop, crowd, break and feed bad input to whole runs of every job against
# SeaweedFS (tests/chaos/README.md). CHAOS_KILLS (kills and stops a job), CHAOS_FAULT_RUNS
# (runs through storage faults), CHAOS_EXAMPLES (bad inputs a kind), CHAOS_SEED,
# CHAOS_PAUSES (holders paused past their lease), CHAOS_SLOW_LOCK_RUNS (pairs of runs whose
# lock answers are held) change the schedule; make test runs 1, 1, 8, 1 and 1, crowds
# the Lease lock with the report only, and pauses and holds the S3 lock's answers of the
# report only.
chaos: install
	CHAOS_FULL=1 CHAOS_KILLS=$${CHAOS_KILLS:-30} CHAOS_FAULT_RUNS=$${CHAOS_FAULT_RUNS:-15} \
	CHAOS_PAUSES=$${CHAOS_PAUSES:-5} CHAOS_SLOW_LOCK_RUNS=$${CHAOS_SLOW_LOCK_RUNS:-2} \
	CHAOS_EXAMPLES=$${CHAOS_EXAMPLES:-150} $(BIN)/python -m pytest -m chaos tests/chaos

lint: install
	@echo "make lint: ruff, ruff format --check and mypy --strict"
	$(BIN)/ruff check src tests bench docker
	$(BIN)/ruff format --check src tests bench docker
	$(BIN)/mypy

# Every job twice against a local S3 server (Docker Compose with MinIO when a Docker
# engine answers, else SeaweedFS on this machine); everything it made is in run-local/.
run-local: $(LOCAL_STAMP)
	$(BIN)/python docker/run_local.py

clean-local:
	rm -rf run-local

bench: install
	@ls bench/*_bench.py >/dev/null 2>&1 || { echo "no benchmarks yet"; exit 0; }
	for b in bench/*_bench.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache src/*.egg-info run-local

# k8s/ with your image in every manifest (a digest pins it) and, with PULL_SECRET, an
# image pull Secret in every pod, written to build/k8s/ (docs/operating.md, "Running in
# a cluster").
.PHONY: manifests
manifests:
	@test -n "$(IMAGE)" || { echo "make manifests needs IMAGE=registry/ochinai@sha256:... (or :tag)"; exit 2; }
	$(PYTHON) docker/manifests.py --image "$(IMAGE)" --pull-secret "$(PULL_SECRET)"
