# jobmgr: `make run` sets everything up and runs the server; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: install test test-long run certs protobufs lint bench bench-quick clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py jobmgr/worker/_pid1.c jobmgr/worker/_pid1_supervise.c \
		jobmgr/worker/_pid1.h
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

test: install
	$(SUDO) $(BIN)/pytest -n auto -m 'not long' $(PYTEST_ARGS)

test-long: install
	$(SUDO) $(BIN)/pytest -n auto -m long $(PYTEST_ARGS)

certs: install
	$(BIN)/jobmgr-certs --out certs

run: install certs
	$(SUDO) $(BIN)/jobmgr-server

# Generated code is committed. protoc writes top-level `import job_pb2`; the package needs
# relative imports, hence the sed lines.
protobufs: install
	$(BIN)/python -m grpc_tools.protoc -Iproto \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
		--python_out=jobmgr/api/_proto --grpc_python_out=jobmgr/api/_proto \
		--mypy_out=jobmgr/api/_proto --mypy_grpc_out=jobmgr/api/_proto proto/job.proto
	sed -i 's/^import job_pb2 as job__pb2$$/from . import job_pb2 as job__pb2/' jobmgr/api/_proto/job_pb2_grpc.py
	sed -i 's/^import job_pb2 as _job_pb2$$/from . import job_pb2 as _job_pb2/' jobmgr/api/_proto/job_pb2_grpc.pyi

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy jobmgr steps tests bench

bench: install
	$(SUDO) $(BIN)/python -m bench

bench-quick: install
	$(SUDO) $(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) build *.egg-info
