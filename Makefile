# jobmgr: `make run` sets everything up and runs the server; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
VM_STAMP := $(VENV)/.installed-vm
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: install system-deps test-deps test test-long test-v2 run certs dist protobufs lint bench bench-quick clean

install: $(STAMP)

# The jobs' init is C and links libseccomp: a C compiler and libseccomp's headers are installed
# here when a program using it does not build (apt; elsewhere setup.py stops with the package
# to install).
system-deps:
	@probe=$$(mktemp -d) \
		&& printf '#include <seccomp.h>\nint main(void) { return !seccomp_api_get(); }\n' \
			> $$probe/probe.c \
		&& cc $$probe/probe.c -lseccomp -o $$probe/probe >/dev/null 2>&1; built=$$?; \
		rm -rf $$probe; [ $$built = 0 ] || ! command -v apt-get >/dev/null \
		|| $(SUDO) sh -c 'apt-get update -qq && apt-get install -y -qq gcc libc6-dev libseccomp-dev'

# The suite's root-filesystem scenario copies a static busybox into a tree of its own.
test-deps:
	@command -v busybox >/dev/null || ! command -v apt-get >/dev/null \
		|| $(SUDO) sh -c 'apt-get update -qq && apt-get install -y -qq busybox-static'

$(STAMP): pyproject.toml setup.py $(wildcard jobmgr/worker/*.c jobmgr/worker/*.h) | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

test: install test-deps
	$(SUDO) $(BIN)/pytest -n auto -m 'not long' $(PYTEST_ARGS)

# One at a time: each long scenario measures the server under a load of its own (a flood, 5 000
# jobs), which a second one beside it on two cores would distort.
test-long: install test-deps
	$(SUDO) $(BIN)/pytest -n 0 -m long $(PYTEST_ARGS)

# The kernel-facing features in a cgroup-v2-only VM (virtme-ng + qemu; see vm/__init__.py).
# Installs what it needs: the Debian packages (apt-get, as root) and the `vm` extra.
# A subset: make test-v2 VM_ARGS="-k throttled steps/test_cgroups.py" (python -m vm --help).
test-v2: install $(VM_STAMP)
	$(SUDO) $(BIN)/python -m vm --install-missing $(VM_ARGS)

$(VM_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,dev,vm]'
	touch $(VM_STAMP)

certs: install
	$(BIN)/jobmgr-certs --out certs

run: install certs
	$(SUDO) $(BIN)/jobmgr-server

# dist/: the sdist, and the wheel built from it, which auditwheel tags
# py3-none-manylinux_X_Y_ARCH by the glibc its program needs (setup.py says why py3-none).
# libseccomp (LGPL-2.1) stays the host's: the program links libseccomp.so.2 dynamically, and
# the wheel does not carry a copy (the server says how to install it when it is missing).
WHEEL_EXCLUDES := --exclude libseccomp.so.2
dist: install
	rm -rf dist
	$(BIN)/python -m build --no-isolation --outdir dist/build .
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/auditwheel repair $(WHEEL_EXCLUDES) \
		--wheel-dir dist dist/build/*.whl
	mv dist/build/*.tar.gz dist/
	rm -rf dist/build

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
	$(BIN)/mypy jobmgr steps tests bench harness vm

bench: install
	$(SUDO) $(BIN)/python -m bench

bench-quick: install
	$(SUDO) $(BIN)/python -m bench --quick

clean:
	rm -rf $(VENV) build dist *.egg-info
