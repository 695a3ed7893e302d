#!/usr/bin/env bash
# Runs the core test suites under Miri and ThreadSanitizer when a nightly
# toolchain with them is installed, and says plainly which it skipped.
#
#   bash scripts/sanitize.sh            # both
#   TOOLCHAIN=nightly-2026-05-19 bash scripts/sanitize.sh
#
# To get them (rustup fetches from the Rust project's own servers):
#   rustup toolchain install nightly --component miri rust-src
#
# Exit status: 0 when everything that ran passed and at least one ran;
# 1 when one failed; 2 when both were skipped, so a skip is never mistaken
# for a pass.
#
# Miri interprets the tests, so the big ones (16-thread stress, 300 waiters,
# 2000 keys) are skipped there; ThreadSanitizer runs everything in tests/
# that exercises the core (not the HTTP demo, whose C SQLite is not
# instrumented).
set -uo pipefail
cd "$(dirname "$0")/.."
TOOLCHAIN=${TOOLCHAIN:-nightly}
CORE_TESTS=(--test group --test forget --test panics --test timeout)
failed=0
ran=()
skipped=()

have_component() {
  rustup component list --toolchain "$TOOLCHAIN" --installed 2>/dev/null | grep -q "^$1"
}

if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
  skipped+=("Miri and ThreadSanitizer: no $TOOLCHAIN toolchain (rustup toolchain install $TOOLCHAIN --component miri rust-src)")
else
  if have_component miri; then
    echo "=== Miri ($TOOLCHAIN)"
    # Isolation off: the tests read the clock for their deadlines.
    if MIRIFLAGS="-Zmiri-disable-isolation" cargo "+$TOOLCHAIN" miri test --lib "${CORE_TESTS[@]}" -- \
      --skip stress --skip hundreds_of_waiters --skip distinct_keys; then
      ran+=("Miri passed")
    else
      ran+=("Miri FAILED"); failed=1
    fi
  else
    skipped+=("Miri: not installed for $TOOLCHAIN (rustup component add miri --toolchain $TOOLCHAIN)")
  fi

  if have_component rust-src; then
    echo "=== ThreadSanitizer ($TOOLCHAIN)"
    target=$(rustc "+$TOOLCHAIN" -vV | sed -n 's/^host: //p')
    if RUSTFLAGS="-Zsanitizer=thread" RUSTDOCFLAGS="-Zsanitizer=thread" \
      CARGO_TARGET_DIR=target/tsan \
      cargo "+$TOOLCHAIN" test -Zbuild-std --target "$target" --lib "${CORE_TESTS[@]}"; then
      ran+=("ThreadSanitizer passed")
    else
      ran+=("ThreadSanitizer FAILED"); failed=1
    fi
  else
    skipped+=("ThreadSanitizer: rust-src is not installed for $TOOLCHAIN, and -Zbuild-std needs it (rustup component add rust-src --toolchain $TOOLCHAIN)")
  fi
fi

echo
for line in "${ran[@]+"${ran[@]}"}"; do echo "sanitize: $line"; done
for line in "${skipped[@]+"${skipped[@]}"}"; do echo "sanitize: SKIPPED $line"; done
if [ "$failed" -ne 0 ]; then
  exit 1
fi
if [ "${#ran[@]}" -eq 0 ]; then
  echo "sanitize: nothing was checked"
  exit 2
fi
