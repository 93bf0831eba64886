#!/usr/bin/env bash
# Runs every benchmark script in bench/ (bench_*.sh), one after another, so they never compete
# for the cores: bench_images.sh (image generation through the fake upstream: throughput vs
# nginx, 2,000 concurrent, 4K memory) and bench_me.sh (GET /v1/me vs nginx).
# `make bench` calls this after building the release binary.
# Each script exits 0 when it ran (missed targets are printed as MISSED, not failures); a
# script that could not run makes this exit non-zero after the others have run.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
failed=()
shopt -s nullglob
for script in "$here"/bench_*.sh; do
  echo "=== $(basename "$script") ==="
  if ! bash "$script"; then
    failed+=("$(basename "$script")")
  fi
  echo
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "run_all: failed to run: ${failed[*]}" >&2
  exit 1
fi
