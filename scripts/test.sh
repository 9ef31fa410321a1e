#!/usr/bin/env bash
# The whole test suite, or one stage of it: lint | sanity | unit | build | molecule,
# or shim (the shim scenario alone, also the last scenario of molecule).
# Needs root (molecule creates users, network namespaces and starts RabbitMQ and sshd) and the venv's tools on PATH.
#
# sr3c is in no registry CI reaches: the sr3c build tests (unit stage) and the shim
# scenario (molecule stage) build it from SR3C_SOURCE, a sarrac release tarball or
# source tree. Unset, it defaults to the vendored test input
# ../shared/vendor/sarrac-3.24.10.tar.gz beside the checkout, verified against that
# directory's SHA256SUMS first, with the version floor lowered to 3.24.10 for the tests only.
set -euo pipefail
cd "$(dirname "$0")/.."
stages=${*:-lint sanity unit build molecule}

vendor_dir=$(cd .. && pwd)/shared/vendor
vendor_tarball=$vendor_dir/sarrac-3.24.10.tar.gz
if [ -z "${SR3C_SOURCE:-}" ] && [ -f "$vendor_tarball" ]; then
  expected=$(awk '$2 == "sarrac-3.24.10.tar.gz" || $2 == "*sarrac-3.24.10.tar.gz" { print $1 }' "$vendor_dir/SHA256SUMS" 2>/dev/null || true)
  if [ -z "$expected" ]; then
    echo "ERROR: $vendor_dir/SHA256SUMS has no line for sarrac-3.24.10.tar.gz: refusing to build an unverified sr3c" >&2
    exit 1
  fi
  actual=$(sha256sum "$vendor_tarball" | cut -d' ' -f1)
  if [ "$actual" != "$expected" ]; then
    echo "ERROR: checksum mismatch for $vendor_tarball: sha256 $actual, SHA256SUMS says $expected" >&2
    exit 1
  fi
  export SR3C_SOURCE=$vendor_tarball
  export SR3C_SOURCE_CHECKSUM=sha256:$expected
  export SR3C_MINIMUM_VERSION=${SR3C_MINIMUM_VERSION:-3.24.10}
  echo "sr3c: $SR3C_SOURCE (sha256 verified), version floor $SR3C_MINIMUM_VERSION for the tests"
fi

for stage in $stages; do
  echo "=== $stage"
  case $stage in
    lint)
      ansible-lint --profile production --offline ;;
    sanity)
      bash scripts/sanity.sh ;;
    unit)
      python -m pytest -q -rs tests/unit tests/integration ;;
    build)
      bash scripts/check_build.sh ;;
    molecule)
      molecule test -s local
      molecule test -s default
      molecule test -s failover
      bash scripts/test.sh shim ;;
    shim)
      if [ -n "${SR3C_SOURCE:-}" ]; then molecule test -s shim
      else echo "molecule shim: skipped, SR3C_SOURCE is not set and $vendor_tarball does not exist"; fi ;;
    *)
      echo "unknown stage: $stage" >&2; exit 2 ;;
  esac
done
