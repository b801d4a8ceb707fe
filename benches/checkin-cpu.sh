#!/usr/bin/env bash
# CPU per check-in, server and PostgreSQL apart, read from /proc: the cost that follows the
# machine's speed, where throughput swings 2-3x between these machines from day to day. Runs
# `licensor bench check-ins` against each server binary given, in turn and ROUNDS times over
# (so that a slow stretch of the machine falls on both), each on a fresh PostgreSQL database,
# and prints, per run, check-ins/s, p99, and the server's and PostgreSQL's CPU per check-in in
# microseconds and in units of an Ed25519 verification timed by OpenSSL in the same run.
#
# Usage: benches/checkin-cpu.sh LOADGEN SERVER_BINARY... (release builds; PostgreSQL on
#        127.0.0.1:5432 with trust auth, as on these machines)
# Environment: LICENSES (2000), INSTANCES (1000000), REQUESTS (120000), CONCURRENCY (48),
#              ROUNDS (2), PG_URL (postgres://postgres@127.0.0.1:5432).
# The 1M-instance mix is the default; compare only figures of one run of this script.
set -euo pipefail

loadgen=$1
shift
licenses=${LICENSES:-2000}
instances=${INSTANCES:-1000000}
requests=${REQUESTS:-120000}
concurrency=${CONCURRENCY:-48}
rounds=${ROUNDS:-2}
pg=${PG_URL:-postgres://postgres@127.0.0.1:5432}
port=18383
tick=$(getconf CLK_TCK)

# utime + stime of one process, in clock ticks.
ticks_of() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# The same summed over every PostgreSQL process (backends come and go; the ones that ended
# during the run are counted by their parent as cutime/cstime, so read those too).
postgres_ticks() {
    local total=0 pid
    for pid in $(pgrep -x postgres || true); do
        total=$((total + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

verify_us() {
    # OpenSSL's Ed25519 verifications per second, over 2 seconds: the reference unit.
    openssl speed -seconds 2 ed25519 2>/dev/null | awk '/Ed25519\)/ {print 1e6 / $NF}'
}

echo "licenses=$licenses instances=$instances requests=$requests concurrency=$concurrency rounds=$rounds"
printf '%-40s %9s %8s %12s %12s %10s %10s\n' binary "checkin/s" "p99 ms" "server us" "postgres us" "server u" "postgres u"
for round in $(seq 1 "$rounds"); do
    for binary in "$@"; do
        db="licensor_cpu_$$_$round"
        psql "$pg/postgres" -qc "CREATE DATABASE $db"
        work=$(mktemp -d)
        token="cpu-bench-$(date +%s%N)"
        (cd "$work" && DATABASE_URL="$pg/$db" LICENSOR_ADMIN_TOKEN="$token" LICENSOR_BIND="127.0.0.1:$port" \
            LICENSOR_RATE_LIMIT_PER_ADDRESS=100000000 LICENSOR_RATE_LIMIT_PER_MINUTE=100000000 \
            LICENSOR_NO_JOBS=true RUST_LOG=error exec "$binary" serve >"$work/serve.log" 2>&1) &
        server=$!
        for _ in $(seq 1 120); do
            "$binary" healthcheck --url "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
            sleep 0.5
        done
        unit=$(verify_us)
        s0=$(ticks_of "$server")
        p0=$(postgres_ticks)
        out=$("$loadgen" bench check-ins --url "http://127.0.0.1:$port" --token "$token" \
            --licenses "$licenses" --instances "$instances" --requests "$requests" --concurrency "$concurrency" 2>&1)
        s1=$(ticks_of "$server")
        p1=$(postgres_ticks)
        kill "$server"
        wait "$server" 2>/dev/null || true
        psql "$pg/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
        rm -rf "$work"
        rate=$(awk '/^throughput:/ {print $2}' <<<"$out")
        p99=$(grep -oE 'p99 [0-9.]+' <<<"$out" | head -1 | awk '{print $2}')
        # CPU is divided by the check-ins answered 200 (a refused request costs little; the
        # bench's random run id can make some instance ids look like personal data, refused).
        ok=$(awk '/^  [a-z_]+: [0-9]+$/ {n += $2} END {print n + 0}' <<<"$out")
        if grep -qE '^  (http|transport)' <<<"$out"; then
            echo "warning: some check-ins failed:" >&2
            grep -E '^  ' <<<"$out" >&2
        fi
        awk -v b="$binary" -v r="$rate" -v p="$p99" -v s=$((s1 - s0)) -v g=$((p1 - p0)) -v n="$ok" -v t="$tick" -v u="$unit" \
            'BEGIN { su = s / t * 1e6 / n; gu = g / t * 1e6 / n;
                     printf "%-40s %9s %8s %12.0f %12.0f %10.2f %10.2f\n", b, r, p, su, gu, su / u, gu / u }'
    done
done
