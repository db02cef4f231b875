# cml-operator: one entry point per task. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_VERSION := 26.0
PYTEST_ARGS ?=
#: Test processes (pytest-xdist) for `make test`: each has its own control plane, moto_server and fault
#: proxy. The end-to-end tests mostly wait, so more workers than the 2 cores pay (docs/testing.md).
TEST_WORKERS ?= 6
#: `make test` also lists the 30 slowest tests and writes this JUnit report.
JUNIT_XML ?= build/junit.xml
#: Tests that start `make dev`/`make cluster` in the repository: they pass alone (4 in 76 s) but failed
#: beside the parallel run in two of three clean-clone runs, so make test runs them after it, one at a time.
SERIAL_TESTS := tests/e2e/test_devenv_signals.py
JUNIT_SERIAL_XML ?= build/junit-serial.xml

.PHONY: help install control-plane tools image test-k8s test unit e2e cluster dev bench soak lock clean crds monitoring release

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# pip 23 backtracks for many minutes on this tree: upgrade pip first, install pinned.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

dev: install control-plane ## everything local: control plane, moto EC2, the operator and a sample worker (Ctrl-C stops)
	$(BIN)/python -m tests.devenv $(DEV_ARGS)

install: $(VENV)/.installed ## create or reuse .venv with the operator and test dependencies

control-plane: ## build etcd, kube-apiserver, kube-controller-manager and kubectl once into ~/.cache/cml-operator (Go needed)
	tests/cluster/build.sh >/dev/null

image: ## build the Dockerfile with buildah into localhost/cml-operator:dev (IMAGE=..., BASE=python:3.11.14-slim-bookworm with a registry; default: a local Debian base)
	tests/image/build.sh

#: The Kubernetes versions `make test-k8s` runs against (docs/compatibility.md); the newest is what make test uses.
VERSIONS ?= v1.31.14 v1.35.4 v1.36.3 v1.37.2
K8S_SUBSET ?= tests/cluster/test_controlplane.py tests/e2e/test_bad_input.py tests/e2e/test_lifecycle.py

test-k8s: install control-plane ## control-plane tests and a lifecycle subset against each Kubernetes version (VERSIONS="v1.31.14 v1.35.4 v1.36.3 v1.37.2")
	@for version in $(VERSIONS); do \
	  bin=$$(tests/cluster/matrix/build-apiserver.sh $$version) || exit 1; \
	  echo "==> Kubernetes $$version ($$bin)"; \
	  CML_K8S_BIN_DIR=$$bin CML_K8S_VERSION=$$version $(BIN)/python -m pytest $(K8S_SUBSET) -q $(PYTEST_ARGS) || exit 1; \
	done

tools: ## build helm, promtool and the kstatus helper once into ~/.cache/cml-operator/tools (Go needed)
	tests/tools/build.sh >/dev/null

test: install control-plane tools ## the whole suite: unit, cluster and end-to-end (what CI runs; TEST_WORKERS=6 in parallel)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --durations=30 --junitxml=$(JUNIT_XML) --ignore=$(SERIAL_TESTS) $(PYTEST_ARGS)
	$(BIN)/python -m pytest -n 0 --junitxml=$(JUNIT_SERIAL_XML) $(SERIAL_TESTS)

unit: install ## unit tests only (no cluster)
	$(BIN)/python -m pytest -n 2 tests/unit $(PYTEST_ARGS)

bench: install control-plane ## scale benchmark: N=100,500,1000 workers, batched vs unbatched; fails when a target is missed (BENCH_ARGS=--sizes 100); BENCH_ARGS=--pool: pool 0 -> 50 -> 5
	$(BIN)/python -m tests.bench.scale $(BENCH_ARGS)

soak: install control-plane ## long failure soaks: 200 random SIGKILLs, a 2-minute 30% EC2 fault soak with 30 workers
	CML_KILL_POINTS=200 CML_SOAK_SECONDS=120 CML_SOAK_WORKERS=30 $(BIN)/python -m pytest \
	  tests/e2e/test_crash_safety.py::test_random_kills_while_creating_never_duplicate \
	  tests/e2e/test_resilience.py::test_fault_soak_converges_without_duplicates_within_3x_calls -s $(PYTEST_ARGS)

crds: install ## regenerate the CMLWorker schema inside crds/cmlworkerpool.yaml from crds/cmlworker.yaml; copy crds/ and deploy/rbac.yaml's rules into the chart
	$(BIN)/python -m tests.support.crdgen
	$(BIN)/python -m tests.support.chartgen

release: install ## make release VERSION=x.y.z: dist/ with the chart package, the image as an OCI archive and its CycloneDX SBOM (docs/install.md#releases)
	VERSION=$(VERSION) tests/image/release.sh

monitoring: install ## regenerate deploy/monitoring/dashboard.json from tests/support/dashboardgen.py; copy deploy/monitoring into the chart
	$(BIN)/python -m tests.support.dashboardgen
	$(BIN)/python -m tests.support.chartgen

lock: install ## rewrite constraints.txt from the current virtualenv
	{ echo "# The whole dependency tree, pinned (pip install -c constraints.txt). Regenerate with 'make lock'."; \
	  $(BIN)/python -m pip freeze --exclude-editable; } > constraints.txt

clean: ## remove the virtualenv and caches inside the repository (not the built binaries)
	rm -rf $(VENV) .pytest_cache .dev

cluster: install control-plane ## run etcd + kube-apiserver standalone with crds/ applied; kubeconfig in .dev/kubeconfig (Ctrl-C stops; CLUSTER_ARGS=--no-rbac)
	$(BIN)/python -m tests.cluster $(CLUSTER_ARGS)
