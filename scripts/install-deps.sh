#!/usr/bin/env bash
# Installs the Debian 12 packages imagegate needs that are missing. Idempotent and quiet when
# everything is present. Usage: scripts/install-deps.sh [build|test|bench]...
set -euo pipefail

build_pkgs=(
  g++ cmake ninja-build pkg-config ccache
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev
  libcurl4-openssl-dev libssl-dev libsqlite3-dev libsodium-dev
  libspdlog-dev libfmt-dev libtomlplusplus-dev libcli11-dev libvips-dev fonts-noto-cjk
  libgoogle-perftools-dev
  libgtest-dev libgmock-dev libbenchmark-dev
)
test_pkgs=(python3 python3-pytest python3-requests sqlite3)
bench_pkgs=(wrk nginx-light python3 valgrind)
fuzz_pkgs=(clang-16 libclang-rt-16-dev)

want=("${build_pkgs[@]}")
for group in "$@"; do
  case "$group" in
    build) ;;
    test) want+=("${test_pkgs[@]}") ;;
    bench) want+=("${test_pkgs[@]}" "${bench_pkgs[@]}") ;;
    fuzz) want+=("${fuzz_pkgs[@]}") ;;
    *) echo "install-deps: unknown group '$group' (build, test, bench, fuzz)" >&2; exit 2 ;;
  esac
done

# The Node test (the official openai npm client) needs node and npm; a machine may already have
# them from another source than Debian, so look for the commands, not the packages.
for group in "$@"; do
  if [ "$group" = test ] && { ! command -v node >/dev/null || ! command -v npm >/dev/null; }; then
    want+=(nodejs npm)
  fi
done

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
