#!/bin/sh
# The scrubber's cost beside an earlier commit's, in one run on one machine: builds
# benches/scrubber.rs against this tree and against BASELINE (default 8c5c06f, the scrubber by
# brand before masking by shape) in a worktree sharing this target directory, then runs them
# in turn, twice each, so the machine's drift shows.
set -eu
BASELINE=${BASELINE:-8c5c06f}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/baseline" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add --detach "$work/baseline" "$BASELINE" >/dev/null
cp "$root/benches/scrubber.rs" "$work/baseline/benches/scrubber.rs"
grep -q 'name = "scrubber"' "$work/baseline/Cargo.toml" ||
    printf '\n[[bench]]\nname = "scrubber"\nharness = false\n' >>"$work/baseline/Cargo.toml"
export CARGO_TARGET_DIR="$root/target"
(cd "$work/baseline" && cargo build --release --bench scrubber --message-format=json 2>/dev/null) |
    sed -n 's/.*"executable":"\([^"]*scrubber[^"]*\)".*/\1/p' | tail -1 >"$work/old"
cp "$(cat "$work/old")" "$work/scrubber-baseline"
(cd "$root" && cargo build --release --bench scrubber --message-format=json 2>/dev/null) |
    sed -n 's/.*"executable":"\([^"]*scrubber[^"]*\)".*/\1/p' | tail -1 >"$work/new"
for round in 1 2; do
    SCRUBBER_BENCH_LABEL="$BASELINE (round $round)" "$work/scrubber-baseline"
    SCRUBBER_BENCH_LABEL="this tree (round $round)" "$(cat "$work/new")"
done
