# The two commands of the README, plus helpers. Everything installs what it needs first.
SHELL := /bin/bash
JOBS ?= $(shell nproc)
PYTEST := /usr/bin/python3 -m pytest

.PHONY: run test build-release build-debug unit blackbox bench fuzz format clean

run: build-release
	./build/release/imagegate serve

test: build-debug
	@scripts/install-deps.sh test
	ctest --test-dir build/debug --output-on-failure -j $(JOBS)
	IMAGEGATE_BIN=$(CURDIR)/build/debug/imagegate $(PYTEST) -q tests/blackbox

build-release:
	@scripts/install-deps.sh build
	@cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS)

build-debug:
	@scripts/install-deps.sh build
	@cmake --preset debug >/dev/null
	cmake --build --preset debug -j $(JOBS)

bench: build-release
	@scripts/install-deps.sh bench
	bench/run_all.sh

fuzz:
	@scripts/install-deps.sh build
	@command -v clang++ >/dev/null || { echo "make fuzz needs clang (apt-get install clang libclang-rt-14-dev)"; exit 1; }
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz -j $(JOBS)

format:
	clang-format -i $$(git ls-files 'src/*.cpp' 'src/*.h' 'fuzz/*.cpp' 'bench/*.cpp')

clean:
	rm -rf build
