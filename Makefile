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
	cd tests/node && npm ci --no-audit --no-fund --silent && IMAGEGATE_BIN=$(CURDIR)/build/debug/imagegate node --test

build-release:
	@scripts/install-deps.sh build
	@cmake --preset release >/dev/null
	cmake --build --preset release -j $(JOBS) --target imagegate

build-debug:
	@scripts/install-deps.sh build
	@cmake --preset debug >/dev/null
	cmake --build --preset debug -j $(JOBS)

bench: build-release
	@scripts/install-deps.sh bench
	cmake --build --preset release -j $(JOBS) --target imagegate_microbench
	bench/run_all.sh

# libFuzzer targets with clang 16 (Debian's clang 14 lacks what libstdc++ 12's <expected> needs;
# libstdc++ gates <expected> on __cpp_concepts, which clang 16 implements but reports as older).
fuzz:
	@scripts/install-deps.sh build fuzz
	cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz -j $(JOBS)
	@echo "run e.g.: build/fuzz/multipart_fuzz -max_total_time=60 fuzz/corpus/multipart_fuzz"

format:
	clang-format -i $$(git ls-files 'src/*.cpp' 'src/*.h' 'fuzz/*.cpp' 'bench/*.cpp')

clean:
	rm -rf build
