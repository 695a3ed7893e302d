#!/usr/bin/env bash
# Mutation testing of the core with cargo-mutants (https://mutants.rs):
# every mutant that builds and still passes the tests is a gap in them.
#
#   bash scripts/mutants.sh                       # call.rs, sharded_map.rs, group.rs, join.rs
#   bash scripts/mutants.sh --all                 # every file in src/
#   bash scripts/mutants.sh --committed           # a clean export of HEAD, not the work tree
#   MUTANTS_COMMIT=abc123 bash scripts/mutants.sh --committed   # ... or of that commit
#   bash scripts/mutants.sh -f src/call.rs        # any -f/--file replaces the default files
#   bash scripts/mutants.sh --re 'Call<V>::wait'  # other arguments go to cargo mutants
#   bash scripts/mutants.sh --list                # just list the mutants
#
# Results go to mutants.out/ (caught.txt, missed.txt, timeout.txt,
# unviable.txt, outcomes.json, one log per mutant). The exit status is
# cargo-mutants': 0 if every viable mutant was caught, 2 if some were missed,
# 3 if some timed out.
#
# Not part of CI: each viable mutant rebuilds the crate and every test
# binary, then runs the suites, some 15 s a mutant on a shared 2-core
# machine, and a mutant that hangs a call costs the whole timeout. The
# core's ~200 mutants take over an hour there (call.rs 15 minutes,
# sharded_map.rs 23, with a 30 s timeout).
#
# `--all` also lists the loom-only code of src/sync.rs, which a normal build
# does not compile: its mutants show up as missed and mean nothing.
#
# Settings, all overridable from the environment:
#   MUTANTS_JOBS            mutants built and tested at once (1)
#   MUTANTS_TIMEOUT         seconds a mutant's tests may run before it counts
#                           as a timeout (60: the suite takes 3 to 10 s; a
#                           hung call fails its test after 30 s anyway)
#   MUTANTS_BUILD_TIMEOUT   seconds a mutant's build may take (900)
#   MUTANTS_TARGET_DIR      the target directory the builds share (target/mutants)
#   MUTANTS_OUTPUT          where mutants.out/ goes (the repository root)
#   MUTANTS_TEST_TARGETS    the cargo test target selection ("--lib --tests":
#                           unit and integration tests; no doctests, examples
#                           or benches, which are slow to build and test
#                           nothing the suites do not)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

CORE=(src/call.rs src/sharded_map.rs src/group.rs src/join.rs)
jobs=${MUTANTS_JOBS:-1}
timeout=${MUTANTS_TIMEOUT:-60}
build_timeout=${MUTANTS_BUILD_TIMEOUT:-900}
read -r -a targets <<<"${MUTANTS_TEST_TARGETS:---lib --tests}"

files=("${CORE[@]}")
committed=false
explicit_files=false
args=()
while (($#)); do
  case $1 in
    --all)
      files=(src/*.rs)
      ;;
    --committed)
      committed=true
      ;;
    -f | --file)
      explicit_files=true
      args+=("$1" "$2")
      shift
      ;;
    --file=*)
      explicit_files=true
      args+=("$1")
      ;;
    *)
      args+=("$1")
      ;;
  esac
  shift
done
if ! $explicit_files; then
  for file in "${files[@]}"; do
    args+=(--file "$file")
  done
fi

if ! cargo mutants --version >/dev/null 2>&1; then
  echo "mutants: installing cargo-mutants"
  cargo install --locked cargo-mutants
fi

# One shared target directory, apart from everyone else's builds, so the
# dependencies are built once and survive between runs. cargo-mutants copies
# the tree to a scratch directory (with fresh mtimes, so cargo never mistakes
# a stale artifact for a current one) and, one mutant at a time, rewrites and
# restores one file there; sharing is only sound because builds never
# overlap, so with more jobs each scratch copy builds in its own target/.
if ((jobs == 1)); then
  export CARGO_TARGET_DIR=${MUTANTS_TARGET_DIR:-$root/target/mutants}
else
  unset CARGO_TARGET_DIR
fi
# Line tables are enough for a panic's location and link much faster.
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-line-tables-only}

output=${MUTANTS_OUTPUT:-$root}
mkdir -p "$output"
source_dir=$root
if $committed; then
  # Others may be editing the work tree: run over exactly one commit. `tar -m`
  # gives the files fresh mtimes (git archive stamps the commit's time).
  source_dir=$(mktemp -d "${TMPDIR:-/tmp}/mutants-src.XXXXXX")
  trap 'rm -rf "$source_dir"' EXIT
  commit=$(git rev-parse "${MUTANTS_COMMIT:-HEAD}^{commit}")
  git archive "$commit" | tar -x -m -C "$source_dir"
  echo "mutants: running over $commit (committed tree)"
else
  echo "mutants: running over the work tree (HEAD $(git rev-parse HEAD))"
fi

cargo_args=()
for target in "${targets[@]}"; do
  cargo_args+=(--cargo-arg="$target")
done

status=0
cargo mutants \
  --dir "$source_dir" \
  --output "$output" \
  --jobs "$jobs" \
  --timeout "$timeout" \
  --build-timeout "$build_timeout" \
  "${cargo_args[@]}" \
  "${args[@]}" || status=$?

if [[ -f $output/mutants.out/outcomes.json && ! " ${args[*]} " =~ " --list " ]]; then
  for outcome in caught missed timeout unviable; do
    printf '%-9s %s\n' "$outcome" "$(wc -l <"$output/mutants.out/$outcome.txt")"
  done
fi
exit "$status"
