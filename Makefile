# One entry point for everything. `make check` is what CI runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: postgres-server install go-example proto proto-check contract-release fmt lint typecheck test check fuzz demo bench bench-compare clean

check: lint typecheck proto-check test

# buf (lint and breaking-change checks of proto/) from the npm registry, pinned, in .tools/.
BUF_VERSION := 1.75.0
BUF         := .tools/node_modules/.bin/buf
CONTRACT    := proto/contract/celeriac-v1.json

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

proto: $(STAMP)
	$(PY) proto/generate.py

$(BUF):
	command -v npm >/dev/null || (apt-get update -q && apt-get install -y -q npm)
	npm install --prefix .tools --no-audit --no-fund --silent @bufbuild/buf@$(BUF_VERSION)

proto-check: $(BUF)
	$(BUF) lint
	$(BUF) breaking --against $(CONTRACT)

# Record the contract as released: later changes are checked against it (proto/README.md).
contract-release: $(BUF) $(STAMP)
	$(BUF) build --exclude-source-info -o .tools/contract.json
	$(PY) -c "import json,sys; d=json.load(open('.tools/contract.json')); \
	open('$(CONTRACT)','w').write(json.dumps(d, indent=1, sort_keys=True) + '\n')"

fmt: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

# The Node.js examples' pinned dependencies, for their end-to-end tests.
NODE_EXAMPLES := examples/node/node_modules/.installed

$(NODE_EXAMPLES): examples/node/package-lock.json
	command -v npm >/dev/null || (apt-get update -q && apt-get install -y -q npm)
	npm ci --prefix examples/node --no-audit --no-fund --silent
	touch $@

# The Go example, built offline from Debian's Go toolchain and libraries (examples/go/README.md).
# golang-github-golang-protobuf-1-5-dev, not the 1.3 one apt would pick for grpc: 1.3 cannot read
# messages that today's protoc-gen-go generates.
GO_DEBS      := golang-go protobuf-compiler libprotobuf-dev protoc-gen-go protoc-gen-go-grpc \
                golang-google-grpc-dev golang-google-protobuf-dev golang-google-genproto-dev \
                golang-github-golang-protobuf-1-5-dev
GO_EXAMPLE   := .tools/go/bin/producer

$(GO_EXAMPLE): examples/go/build.sh examples/go/producer/main.go $(wildcard proto/celeriac/v1/*.proto)
	dpkg -s $(GO_DEBS) >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q $(GO_DEBS))
	examples/go/build.sh .tools/go

go-example: $(GO_EXAMPLE)

# A PostgreSQL server for the PostgreSQL store's tests (tests/postgres.py runs its own instance
# from these binaries in a temporary directory); Debian's package when none is installed.
POSTGRES_SERVER := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))

postgres-server:
	@test -n "$(POSTGRES_SERVER)" || (apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql)

# Debian's chromium and its driver, for the dashboard's browser tests.
CHROMEDRIVER := /usr/bin/chromedriver

$(CHROMEDRIVER):
	command -v chromedriver >/dev/null || (apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)

test: $(STAMP) $(NODE_EXAMPLES) $(GO_EXAMPLE) postgres-server $(CHROMEDRIVER)
	$(PY) -m pytest

# The property-based fuzz of every request, longer than in `make test` (FUZZ_EXAMPLES to change).
FUZZ_EXAMPLES ?= 5000
fuzz: $(STAMP)
	CELERIAC_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest tests/broker/test_fuzz.py -o timeout=0 -q

demo: $(STAMP)
	$(PY) examples/demo.py

bench: $(STAMP)
	$(PY) -m bench

bench-compare: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench --compare

clean:
	rm -rf $(VENV) .tools .mypy_cache .pytest_cache .ruff_cache
