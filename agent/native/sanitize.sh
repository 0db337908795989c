#!/usr/bin/env bash
# Builds the native forwarding core with AddressSanitizer and
# UndefinedBehaviorSanitizer (gcc) and runs data-path suites against that
# build: by default native-core and proxy-identity (rotation, refusals,
# revocation of open connections, the fallback). Any ASan/UBSan report
# fails the run. Usage, after npm run build:
#   agent/native/sanitize.sh [test-file-substring ...]
# The preload reaches child processes too: suites that run curl (proxy,
# proxy-http1) time out in their curl cases on both cores under it.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gcc -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined \
  -DNAPI_VERSION=8 -DNODE_GYP_MODULE_NAME=kedge_core -Wall -Wextra -pthread \
  -I/usr/include/node agent/native/src/core.c -o "$out/kedge_core.node"
export KEDGE_NATIVE_CORE_ADDON="$out/kedge_core.node"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
# Node itself is not instrumented and keeps memory until exit: leak reports
# would be about V8, not the core. Errors abort with a report on stderr.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
if [ $# -eq 0 ]; then set -- integration/native-core integration/proxy-identity; fi
node scripts/run-tests.mjs "$@" 2>&1 | tee "$out/log" | grep -E "^ℹ (pass|fail)|ERROR: AddressSanitizer|runtime error" || true
if grep -qE "ERROR: AddressSanitizer|runtime error:" "$out/log"; then echo "sanitizer reports above"; exit 1; fi
grep -q "^ℹ fail 0" "$out/log"
