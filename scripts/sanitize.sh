#!/usr/bin/env bash
# Runs the core test suites under Miri and ThreadSanitizer when a nightly
# toolchain with them is installed; skips each one cleanly when it is not.
#
#   bash scripts/sanitize.sh            # both
#   TOOLCHAIN=nightly-2026-05-19 bash scripts/sanitize.sh
#
# Miri interprets the tests, so the big ones (16-thread stress, 300 waiters,
# 2000 keys) are skipped there; ThreadSanitizer runs everything in tests/
# that exercises the core (not the HTTP demo, whose C SQLite is not
# instrumented).
set -uo pipefail
cd "$(dirname "$0")/.."
TOOLCHAIN=${TOOLCHAIN:-nightly}
CORE_TESTS=(--test group --test forget --test panics --test timeout)
status=0

have_component() {
  rustup component list --toolchain "$TOOLCHAIN" --installed 2>/dev/null | grep -q "^$1"
}

if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
  echo "sanitize: no $TOOLCHAIN toolchain; skipping Miri and ThreadSanitizer"
  exit 0
fi

if have_component miri; then
  echo "=== Miri ($TOOLCHAIN)"
  # Isolation off: the tests read the clock for their deadlines.
  MIRIFLAGS="-Zmiri-disable-isolation" cargo "+$TOOLCHAIN" miri test --lib "${CORE_TESTS[@]}" -- \
    --skip stress --skip hundreds_of_waiters --skip distinct_keys || status=1
else
  echo "sanitize: Miri is not installed for $TOOLCHAIN; skipping"
fi

if have_component rust-src; then
  echo "=== ThreadSanitizer ($TOOLCHAIN)"
  target=$(rustc "+$TOOLCHAIN" -vV | sed -n 's/^host: //p')
  RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread" \
    CARGO_TARGET_DIR=target/tsan \
    cargo "+$TOOLCHAIN" test -Zbuild-std --target "$target" --lib "${CORE_TESTS[@]}" || status=1
else
  echo "sanitize: rust-src is not installed for $TOOLCHAIN (ThreadSanitizer needs -Zbuild-std); skipping"
fi
exit $status
