#!/usr/bin/env bash
# ringyard side by side with the reference registry (distribution 2.8, Debian's docker-registry)
# and nginx serving the same blob files (the ceiling for static bytes), on this machine, in one
# run. Every server gets the same generated images; every workload runs against each in turn;
# one table of figures and ratios is printed at the end, and every figure is kept as JSON.
#
# Usage: loadtest/compare.sh [--smoke] [--skip-huge] [--auth] [--out DIR]
#   --smoke      seconds per workload and small sizes: checks the harness works (CI runs this)
#   --skip-huge  leave out the 10 GiB push and pull
#   --auth       also the authentication workloads (below); the default run leaves them out
#   --out DIR    keep the JSON of every run (and summary.json) in DIR; default: a temp dir
#
# Workloads (full run; pull, manifest and blob in 3 rounds, the median round shown):
#   pull      100 clients pulling a 3-layer image of 3 MiB (the size of alpine) as containerd
#             does, 1000 pulls a round; p99 of a whole pull (ringyard and distribution)
#   manifest  GET of a manifest by tag at 64 connections for 5 s a round (all three)
#   blob      16 parallel GETs of a cached 1 GiB blob (all three)
#   push      1 GiB blob pushed as docker does (POST, streamed PATCH, PUT ?digest=), 3 times,
#             against openssl's sha256 speed on the same machine (ringyard and distribution)
#   huge      10 GiB push then pull, each server's peak RSS over the two (ringyard, distribution);
#             the page cache is dropped before each pull (when this runs as root), so the pull
#             reads the disk, and the disk's own O_DIRECT read speed (dd, 4 MiB reads of the
#             same file) is measured right after as the yardstick
#   basic     (--auth) the manifest workload against a second ringyard with an htpasswd file
#             and its token service on, Basic credentials on every request, against ringyard
#             without authentication
#   bearer    (--auth) the same with a Bearer token fetched once from that ringyard's /token
#             (as docker does after a challenge) and reused on every request
#   tls       (--auth) after the rest, ringyard restarted on its data with a certificate (P-256,
#             from a CA made here) and nginx serving the same files with it: the manifest
#             workload, the blob workload (with each server's CPU seconds per GB sent) and
#             handshakes per second (a new connection per request, 16 at a time, no resumption)
#
# It installs what it needs (Debian packages docker-registry, nginx, jq) when missing, binds to
# 127.0.0.1 only, bounds every run in time (loadtest's --max-seconds and --timeout), and stops
# every process it started when it exits, however it exits.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO_ROOT=$(pwd)

SMOKE=0
SKIP_HUGE=0
AUTH=0
OUT=
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --skip-huge) SKIP_HUGE=1 ;;
        --auth) AUTH=1 ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

say() { echo "compare: $*" >&2; }

# --- what the run needs ---------------------------------------------------------------------

missing=()
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    SUDO=
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" </dev/null >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

say "building ringyard and loadtest (release)"
cargo build --release -p ringyard -p loadtest >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
RINGYARD=$TARGET_DIR/release/ringyard
LOADTEST=$TARGET_DIR/release/loadtest

# Disk, not tmpfs: the blobs are GiBs and the servers fsync.
WORK=$(mktemp -d "${COMPARE_TMPDIR:-/var/tmp}/ringyard-compare.XXXXXX")
chmod 755 "$WORK"
[ -n "$OUT" ] || OUT=$WORK/results
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        # bounded: a server that ignores SIGTERM for 20 s gets SIGKILL
        for _ in $(seq 1 200); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK/ringyard" "$WORK/ringyard-auth" "$WORK/distribution" "$WORK/static" \
        "$WORK/nginx"
    case "$OUT" in "$WORK"/*) ;; *) rm -rf "$WORK" ;; esac
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() { # URL: until it answers, at most 20 s
    for _ in $(seq 1 200); do
        if python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    say "$1 did not answer within 20 s"
    return 1
}

# --- sizes ------------------------------------------------------------------------------------

# The request-rate and throughput workloads run ROUNDS times, the servers taking turns within
# a round, and the table shows the median round: on a shared 2-core machine one run of a few
# seconds moves by 10-30%.
if [ "$SMOKE" = 1 ]; then
    ROUNDS=1; PULLS=200; PULL_CLIENTS=20; MANIFEST_SECS=2; BLOB_SIZE=64MiB; BLOB_REQS=16
    PUSH_SIZE=64MiB; PUSH_COUNT=1; HUGE_SIZE=256MiB
else
    ROUNDS=3; PULLS=1000; PULL_CLIENTS=100; MANIFEST_SECS=5; BLOB_SIZE=1GiB; BLOB_REQS=16
    PUSH_SIZE=1GiB; PUSH_COUNT=3; HUGE_SIZE=10GiB
fi
SMALL_IMAGE=bench/small:v1
SMALL_LAYERS=2MiB,768KiB,256KiB
ACCEPT='Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*'

# --- the servers ------------------------------------------------------------------------------

RY_PORT=$(free_port)
mkdir -p "$WORK/ringyard"
# Access logs off here as for the peers (distribution: accesslog disabled; nginx: access_log
# off); their cost is measured on its own (README, Logs).
"$RINGYARD" serve --listen "127.0.0.1:$RY_PORT" --root "$WORK/ringyard" --quiet --no-access-log \
    2>"$WORK/ringyard.log" &
RY_PID=$!
PIDS+=("$RY_PID")

DIST_PORT=$(free_port)
mkdir -p "$WORK/distribution"
cat >"$WORK/distribution.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/distribution
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$DIST_PORT
EOF
docker-registry serve "$WORK/distribution.yml" 2>"$WORK/distribution.log" &
DIST_PID=$!
PIDS+=("$DIST_PID")

NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx/logs" "$WORK/static"
NGINX_TLS=
if [ "$AUTH" = 1 ]; then
    # One certificate for both servers, for localhost, signed by a CA made here.
    TLS=$WORK/tls
    mkdir -p "$TLS"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=compare-ca -keyout "$TLS/ca.key" -out "$TLS/ca.crt" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
        -keyout "$TLS/server.key" -out "$TLS/server.csr" 2>/dev/null
    echo "subjectAltName=DNS:localhost,IP:127.0.0.1" >"$TLS/ext"
    openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
        -CAcreateserial -days 2 -extfile "$TLS/ext" -out "$TLS/server.crt" 2>/dev/null
    NGINX_TLS_PORT=$(free_port)
    NGINX_TLS="server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl;
        ssl_certificate $TLS/server.crt;
        ssl_certificate_key $TLS/server.key;
        root $WORK/static;
        location ~ /manifests/ {
            default_type application/vnd.oci.image.manifest.v1+json;
        }
    }"
fi
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    # nginx's own default. Debian's packaged config turns it on, but corking cost this
    # workload 10-20% here (16 GETs of 1 GiB: 5.1-6.0 GB/s on, 6.2-7.5 off, same runs), and
    # the ceiling must be nginx at its best.
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $WORK/static;
        location ~ /manifests/ {
            default_type application/vnd.oci.image.manifest.v1+json;
        }
    }
    $NGINX_TLS
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" 2>"$WORK/nginx/logs/stderr.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")

RY=http://127.0.0.1:$RY_PORT
DIST=http://127.0.0.1:$DIST_PORT
NGX=http://127.0.0.1:$NGINX_PORT
wait_http "$RY/v2/"
wait_http "$DIST/v2/"

if [ "$AUTH" = 1 ]; then
    # A second ringyard with authentication on: a user checked by bcrypt (its verdict cached,
    # as every request after the first finds it), its token service on (Basic is still taken
    # on every request), and anonymous push and pull on bench/** so that the seeding below
    # needs no credentials (loadtest seed sends none).
    RYA_PORT=$(free_port)
    mkdir -p "$WORK/ringyard-auth/root"
    echo bench-pw | "$RINGYARD" htpasswd add "$WORK/ringyard-auth/htpasswd" bench >&2
    cat >"$WORK/ringyard-auth/ringyard.yaml" <<EOF
auth:
  access:
    - repository: "**"
      users: [bench]
      actions: [pull, push, delete]
    - repository: "bench/**"
      anonymous: [pull, push]
EOF
    "$RINGYARD" serve --listen "127.0.0.1:$RYA_PORT" --root "$WORK/ringyard-auth/root" --quiet \
        --no-access-log --config "$WORK/ringyard-auth/ringyard.yaml" \
        --htpasswd "$WORK/ringyard-auth/htpasswd" --token 2>"$WORK/ringyard-auth.log" &
    PIDS+=("$!")
    RYA=http://127.0.0.1:$RYA_PORT
    wait_http "$RYA/healthz"
fi

# --- seeding: the same bytes everywhere --------------------------------------------------------

lt() { # NAME ARGS...: one loadtest run, its JSON kept as OUT/NAME.json
    local name=$1
    shift
    if ! "$LOADTEST" "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.err"; then
        say "loadtest $name failed:"
        cat "$OUT/$name.err" >&2
        return 1
    fi
}

say "seeding the small image and the ${BLOB_SIZE} blob"
for srv in RY DIST; do
    url=${!srv}
    lt "seed-small-$srv" seed --registry "$url" --image "$SMALL_IMAGE" --layers "$SMALL_LAYERS"
    lt "seed-blob-$srv" seed --registry "$url" --image bench/big --blob-only "$BLOB_SIZE"
done
if [ "$AUTH" = 1 ]; then
    lt seed-small-RYA seed --registry "$RYA" --image "$SMALL_IMAGE" --layers "$SMALL_LAYERS"
fi
lt seed-small-static seed --out-dir "$WORK/static" --image "$SMALL_IMAGE" --layers "$SMALL_LAYERS"
lt seed-blob-static seed --out-dir "$WORK/static" --image bench/big --blob-only "$BLOB_SIZE"
chmod -R a+rX "$WORK/static"
SMALL_DIGEST=$(jq -r .manifest_digest "$OUT/seed-small-RY.json")
BLOB_DIGEST=$(jq -r .digest "$OUT/seed-blob-RY.json")
for f in seed-small-DIST seed-small-static $([ "$AUTH" = 1 ] && echo seed-small-RYA); do
    [ "$(jq -r .manifest_digest "$OUT/$f.json")" = "$SMALL_DIGEST" ] ||
        { say "$f: different manifest digest"; exit 1; }
done
for f in seed-blob-DIST seed-blob-static; do
    [ "$(jq -r .digest "$OUT/$f.json")" = "$BLOB_DIGEST" ] ||
        { say "$f: different blob digest"; exit 1; }
done
wait_http "$NGX/v2/bench/small/manifests/v1"

# --- workloads ----------------------------------------------------------------------------------

say "pull: a verified pass first (every digest checked), then $ROUNDS x $PULLS pulls by $PULL_CLIENTS clients"
for srv in RY DIST; do
    lt "pull-verify-$srv" pull --registry "${!srv}" --image "$SMALL_IMAGE" \
        --clients 10 --pulls 50 --max-seconds 120
done
for round in $(seq 1 "$ROUNDS"); do
    for srv in RY DIST; do
        lt "pull-$srv-$round" pull --registry "${!srv}" --image "$SMALL_IMAGE" --no-verify \
            --clients "$PULL_CLIENTS" --pulls "$PULLS" --max-seconds 300
    done
done

say "manifest GET by tag, 64 connections, $ROUNDS x ${MANIFEST_SECS} s each"
for round in $(seq 1 "$ROUNDS"); do
    for srv in RY DIST NGX; do
        lt "manifest-$srv-$round" get --url "${!srv}/v2/bench/small/manifests/v1" \
            --header "$ACCEPT" --connections 64 --duration "$MANIFEST_SECS" \
            --expect-digest "$SMALL_DIGEST"
    done
done

if [ "$AUTH" = 1 ]; then
    say "manifest GET by tag with Basic on every request, with a Bearer token reused, and anonymous, $ROUNDS x ${MANIFEST_SECS} s each"
    # One request first, as docker's login makes: its bcrypt is then cached, as in a client's
    # steady state. Without it, 64 first requests each pay a bcrypt (at cost 10, a cold start
    # of seconds on 2 cores) inside a timed run.
    lt basic-warm get --url "$RYA/v2/bench/small/manifests/v1" --header "$ACCEPT" \
        --connections 1 --requests 1 --basic bench:bench-pw
    for round in $(seq 1 "$ROUNDS"); do
        lt "basic-anon-$round" get --url "$RY/v2/bench/small/manifests/v1" \
            --header "$ACCEPT" --connections 64 --duration "$MANIFEST_SECS" \
            --expect-digest "$SMALL_DIGEST"
        lt "basic-user-$round" get --url "$RYA/v2/bench/small/manifests/v1" \
            --header "$ACCEPT" --connections 64 --duration "$MANIFEST_SECS" \
            --expect-digest "$SMALL_DIGEST" --basic bench:bench-pw
        # A token asked for as docker asks (GET /token?service=&scope= with Basic), once per
        # round, then sent on every request; the token lives 5 minutes, a round 5 s.
        lt "basic-bearer-$round" get --url "$RYA/v2/bench/small/manifests/v1" \
            --header "$ACCEPT" --connections 64 --duration "$MANIFEST_SECS" \
            --expect-digest "$SMALL_DIGEST" --basic bench:bench-pw --token-realm "$RYA/token" \
            --token-service ringyard --token-scope repository:bench/small:pull
    done
fi

say "blob GET: $ROUNDS x $BLOB_REQS parallel GETs of $BLOB_SIZE (after one GET that brings it into the page cache)"
# ringyard sends a blob that is not in the page cache with O_DIRECT reads, which leave the
# cache as it was: its GET does not warm the blob, so its file is read once here instead.
hex=${BLOB_DIGEST#sha256:}
cat "$WORK/ringyard/blobs/sha256/${hex:0:2}/$hex" >/dev/null
for srv in RY DIST NGX; do
    lt "blob-warm-$srv" get --url "${!srv}/v2/bench/big/blobs/$BLOB_DIGEST" --connections 1 \
        --requests 1 --max-seconds 300 --timeout 120 --expect-digest "$BLOB_DIGEST"
done
for round in $(seq 1 "$ROUNDS"); do
    for srv in RY DIST NGX; do
        lt "blob-$srv-$round" get --url "${!srv}/v2/bench/big/blobs/$BLOB_DIGEST" \
            --connections "$BLOB_REQS" --requests "$BLOB_REQS" --max-seconds 600 --timeout 120
    done
done

say "push: $PUSH_COUNT x $PUSH_SIZE, streamed as docker does"
for srv in RY DIST; do
    lt "push-$srv" push --registry "${!srv}" --size "$PUSH_SIZE" --count "$PUSH_COUNT" \
        --clients 1 --mode stream --repo bench/push --max-seconds 600 --timeout 120
done
say "openssl sha256 of $PUSH_SIZE, the machine's hashing speed"
"$LOADTEST" seed --out-dir "$WORK/sha" --image sha/probe --blob-only "$PUSH_SIZE" --json \
    >"$OUT/sha-probe.json"
SHA_FILE=$(find "$WORK/sha" -type f | head -n 1)
SHA_BYTES=$(stat -c %s "$SHA_FILE")
cat "$SHA_FILE" >/dev/null # in the page cache, so only hashing is timed
SHA_MBPS=$(python3 - "$SHA_FILE" "$SHA_BYTES" <<'PY'
import subprocess, sys, time
best = 0.0
for _ in range(3):
    t = time.monotonic()
    subprocess.run(["openssl", "dgst", "-sha256", sys.argv[1]], check=True, stdout=subprocess.DEVNULL)
    best = max(best, int(sys.argv[2]) / (time.monotonic() - t) / 1e6)
print(f"{best:.1f}")
PY
)
rm -rf "$WORK/sha"

peak_rss_mib() { # PID -> VmHWM in MiB
    awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"
}
reset_peak() { # PID: VmHWM starts again from the current RSS (Linux 4.0+)
    echo 5 >"/proc/$1/clear_refs"
}
drop_caches() { # so that the next read comes from the disk; only root may, elsewhere a no-op
    sync
    if [ -w /proc/sys/vm/drop_caches ]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

if [ "$SKIP_HUGE" = 0 ]; then
    say "huge: $HUGE_SIZE push, then pull, peak RSS of each server"
    for srv in RY DIST; do
        pid_var=${srv}_PID
        pid=${!pid_var}
        reset_peak "$pid"
        lt "huge-push-$srv" seed --registry "${!srv}" --image bench/huge --blob-only "$HUGE_SIZE" \
            --max-seconds 1200 --timeout 300
        digest=$(jq -r .digest "$OUT/huge-push-$srv.json")
        drop_caches
        lt "huge-pull-$srv" get --url "${!srv}/v2/bench/huge/blobs/$digest" --connections 1 \
            --requests 1 --max-seconds 1200 --timeout 300
        peak_rss_mib "$pid" >"$OUT/huge-rss-$srv.txt"
    done
    # The yardstick for a cold pull: the disk reading the same file with O_DIRECT, 4 MiB at a
    # time, as fast as it can (dd prints bytes and seconds on its last line).
    hex=${digest#sha256:}
    HUGE_FILE="$WORK/ringyard/blobs/sha256/${hex:0:2}/$hex"
    drop_caches
    dd if="$HUGE_FILE" of=/dev/null bs=4M iflag=direct 2>&1 | tail -n 1 |
        awk '{printf "%.1f\n", $1 / $(NF-3) / 1e6}' >"$OUT/disk-direct-mb-per-s.txt"
    [ -w /proc/sys/vm/drop_caches ] && echo 1 >"$OUT/cold.txt" || echo 0 >"$OUT/cold.txt"
fi

cpu_ticks() { # PID: CPU time (user + system, clock ticks) of the process and its children
    local pid total=0 t
    for pid in "$1" $(ps -o pid= --ppid "$1"); do
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}

if [ "$AUTH" = 1 ]; then
    say "TLS: ringyard restarted on its data with the certificate"
    kill "$RY_PID"
    for _ in $(seq 1 200); do kill -0 "$RY_PID" 2>/dev/null || break; sleep 0.1; done
    wait "$RY_PID" 2>/dev/null || true
    "$RINGYARD" serve --listen "127.0.0.1:$RY_PORT" --root "$WORK/ringyard" --quiet \
        --no-access-log --tls-cert "$TLS/server.crt" --tls-key "$TLS/server.key" \
        2>"$WORK/ringyard-tls.log" &
    RY_PID=$!
    PIDS+=("$RY_PID")
    RYT=https://localhost:$RY_PORT
    NGXT=https://localhost:$NGINX_TLS_PORT
    RYT_PID=$RY_PID
    NGXT_PID=$NGINX_PID
    for _ in $(seq 1 200); do
        "$LOADTEST" get --url "$RYT/healthz" --ca "$TLS/ca.crt" --requests 1 --connections 1 \
            --timeout 2 --max-seconds 5 >/dev/null 2>&1 && break
        sleep 0.1
    done
    say "TLS manifest GET by tag, 64 connections, $ROUNDS x ${MANIFEST_SECS} s each"
    for round in $(seq 1 "$ROUNDS"); do
        for srv in RYT NGXT; do
            lt "tls-manifest-$srv-$round" get --url "${!srv}/v2/bench/small/manifests/v1" \
                --ca "$TLS/ca.crt" --header "$ACCEPT" --connections 64 \
                --duration "$MANIFEST_SECS" --expect-digest "$SMALL_DIGEST"
        done
    done
    say "TLS handshakes: a new connection per request, 16 at a time, $ROUNDS x ${MANIFEST_SECS} s"
    for round in $(seq 1 "$ROUNDS"); do
        for srv in RYT NGXT; do
            lt "tls-handshake-$srv-$round" get --url "${!srv}/v2/bench/small/manifests/v1" \
                --ca "$TLS/ca.crt" --header "$ACCEPT" --connections 16 --new-connection \
                --duration "$MANIFEST_SECS" --expect-digest "$SMALL_DIGEST"
        done
    done
    say "TLS blob GET: $ROUNDS x $BLOB_REQS parallel GETs of $BLOB_SIZE, server CPU per GB"
    hex=${BLOB_DIGEST#sha256:}
    cat "$WORK/ringyard/blobs/sha256/${hex:0:2}/$hex" >/dev/null
    for round in $(seq 1 "$ROUNDS"); do
        for srv in RYT NGXT; do
            pid_var=${srv}_PID
            before=$(cpu_ticks "${!pid_var}")
            lt "tls-blob-$srv-$round" get --url "${!srv}/v2/bench/big/blobs/$BLOB_DIGEST" \
                --ca "$TLS/ca.crt" --connections "$BLOB_REQS" --requests "$BLOB_REQS" \
                --max-seconds 600 --timeout 120
            echo $(( $(cpu_ticks "${!pid_var}") - before )) >"$OUT/tls-blob-$srv-$round.ticks"
        done
    done
fi

# --- the table ----------------------------------------------------------------------------------

SUMMARY=$OUT/summary.json
python3 - "$OUT" "$SHA_MBPS" "$SKIP_HUGE" "$SMOKE" "$PUSH_SIZE" "$BLOB_SIZE" "$HUGE_SIZE" \
    "$PULL_CLIENTS" "$ROUNDS" "$AUTH" >"$SUMMARY" <<'PY'
import json, os, sys
out, sha, skip_huge, smoke = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"
push_size, blob_size, huge_size, pull_clients = sys.argv[5:9]
rounds = int(sys.argv[9])
auth = sys.argv[10] == "1"
def j(name):
    with open(os.path.join(out, name + ".json")) as f:
        return json.load(f)
def median_round(name, key):
    """The run (of the rounds) whose figure `key` is the median, and every round's errors."""
    runs = [j(f"{name}-{r}") for r in range(1, rounds + 1)]
    ordered = sorted(runs, key=key)
    return ordered[len(ordered) // 2], sum(r["errors"] for r in runs), [key(r) for r in runs]
def rss(srv):
    with open(os.path.join(out, f"huge-rss-{srv}.txt")) as f:
        return float(f.read())
s = {"smoke": smoke, "rounds": rounds, "openssl_sha256_mb_per_s": sha, "sizes": {
    "push": push_size, "blob": blob_size, "huge": huge_size, "pull_clients": int(pull_clients)}}
if not skip_huge:
    with open(os.path.join(out, "disk-direct-mb-per-s.txt")) as f:
        s["disk_direct_read_mb_per_s"] = float(f.read())
    with open(os.path.join(out, "cold.txt")) as f:
        s["huge_pull_cold"] = f.read().strip() == "1"
for srv in ["RY", "DIST"]:
    p, errors, all_p99 = median_round(f"pull-{srv}", lambda r: r["pull"]["p99_ms"])
    s[f"pull_{srv}"] = {"p50_ms": p["pull"]["p50_ms"], "p99_ms": p["pull"]["p99_ms"],
                        "pulls_per_s": p["pulls_done"] / p["elapsed_s"], "errors": errors,
                        "p99_ms_rounds": all_p99}
    u = j(f"push-{srv}")
    s[f"push_{srv}"] = {"mb_per_s": u["mb_per_s"], "errors": u["errors"]}
    if not skip_huge:
        hp, hg = j(f"huge-push-{srv}"), j(f"huge-pull-{srv}")
        s[f"huge_{srv}"] = {"push_mb_per_s": hp["mb_per_s"], "pull_mb_per_s": hg["mb_per_s"],
                            "peak_rss_mib": rss(srv), "errors": hp["errors"] + hg["errors"]}
for srv in ["RY", "DIST", "NGX"]:
    m, errors, all_rps = median_round(f"manifest-{srv}", lambda r: r["requests_per_s"])
    s[f"manifest_{srv}"] = {"requests_per_s": m["requests_per_s"], "p50_ms": m["latency"]["p50_ms"],
                            "p99_ms": m["latency"]["p99_ms"], "errors": errors,
                            "requests_per_s_rounds": all_rps}
    b, errors, all_mbps = median_round(f"blob-{srv}", lambda r: r["mb_per_s"])
    s[f"blob_{srv}"] = {"mb_per_s": b["mb_per_s"], "p99_ms": b["latency"]["p99_ms"],
                        "errors": errors, "mb_per_s_rounds": all_mbps}
if auth:
    hz = os.sysconf("SC_CLK_TCK")
    for srv in ["RYT", "NGXT"]:
        m, errors, all_rps = median_round(f"tls-manifest-{srv}", lambda r: r["requests_per_s"])
        h, h_errors, all_hs = median_round(f"tls-handshake-{srv}", lambda r: r["requests_per_s"])
        b, b_errors, all_mbps = median_round(f"tls-blob-{srv}", lambda r: r["mb_per_s"])
        cpu = []
        for r in range(1, rounds + 1):
            with open(os.path.join(out, f"tls-blob-{srv}-{r}.ticks")) as f:
                cpu.append(int(f.read()) / hz / (j(f"tls-blob-{srv}-{r}")["bytes"] / 1e9))
        s[f"tls_{srv}"] = {"manifest_requests_per_s": m["requests_per_s"],
                           "manifest_p99_ms": m["latency"]["p99_ms"],
                           "handshakes_per_s": h["requests_per_s"],
                           "blob_mb_per_s": b["mb_per_s"],
                           "blob_cpu_s_per_gb": sorted(cpu)[len(cpu) // 2],
                           "errors": errors + h_errors + b_errors,
                           "manifest_requests_per_s_rounds": all_rps,
                           "handshakes_per_s_rounds": all_hs, "blob_mb_per_s_rounds": all_mbps}
    for kind in ["anon", "user", "bearer"]:
        m, errors, all_rps = median_round(f"basic-{kind}", lambda r: r["requests_per_s"])
        s[f"basic_{kind}"] = {"requests_per_s": m["requests_per_s"],
                              "p99_ms": m["latency"]["p99_ms"], "errors": errors,
                              "requests_per_s_rounds": all_rps}
json.dump(s, sys.stdout, indent=2)
PY

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
echo
echo "$(nproc) cores ($CPU), $(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), \
Linux $(uname -r); ringyard $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), \
$(docker-registry --version 2>/dev/null | awk '{print "distribution " $3}'), $("$NGINX" -v 2>&1 | sed 's/.*\///; s/^/nginx /')"
echo
python3 - "$SUMMARY" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
def ratio(a, b):
    return f"{a / b:.2f}x" if b else "-"
rows = []
def row(what, ry, dist, ngx, vs_dist, vs_ngx, target):
    rows.append((what, ry, dist, ngx, vs_dist, vs_ngx, target))
sz = s["sizes"]
m = {k: s[f"manifest_{k}"] for k in ["RY", "DIST", "NGX"]}
row("manifest GET by tag, 64 conns: req/s", f"{m['RY']['requests_per_s']:.0f}",
    f"{m['DIST']['requests_per_s']:.0f}", f"{m['NGX']['requests_per_s']:.0f}",
    ratio(m["RY"]["requests_per_s"], m["DIST"]["requests_per_s"]),
    ratio(m["RY"]["requests_per_s"], m["NGX"]["requests_per_s"]), ">= 1.5x nginx")
row("  p99 ms", f"{m['RY']['p99_ms']:.2f}", f"{m['DIST']['p99_ms']:.2f}", f"{m['NGX']['p99_ms']:.2f}",
    ratio(m["RY"]["p99_ms"], m["DIST"]["p99_ms"]), ratio(m["RY"]["p99_ms"], m["NGX"]["p99_ms"]),
    "<= nginx")
b = {k: s[f"blob_{k}"] for k in ["RY", "DIST", "NGX"]}
row(f"blob GET {sz['blob']}, 16 streams: MB/s", f"{b['RY']['mb_per_s']:.0f}",
    f"{b['DIST']['mb_per_s']:.0f}", f"{b['NGX']['mb_per_s']:.0f}",
    ratio(b["RY"]["mb_per_s"], b["DIST"]["mb_per_s"]), ratio(b["RY"]["mb_per_s"], b["NGX"]["mb_per_s"]),
    ">= 1.3x nginx")
p = {k: s[f"pull_{k}"] for k in ["RY", "DIST"]}
row(f"{sz['pull_clients']} concurrent pulls, 3 MiB image: p99 ms", f"{p['RY']['p99_ms']:.1f}",
    f"{p['DIST']['p99_ms']:.1f}", "-", ratio(p["RY"]["p99_ms"], p["DIST"]["p99_ms"]), "-",
    "< 250 ms, < 0.33x dist")
row("  pulls/s", f"{p['RY']['pulls_per_s']:.0f}", f"{p['DIST']['pulls_per_s']:.0f}", "-",
    ratio(p["RY"]["pulls_per_s"], p["DIST"]["pulls_per_s"]), "-", "")
u = {k: s[f"push_{k}"] for k in ["RY", "DIST"]}
row(f"push {sz['push']} (streamed): MB/s", f"{u['RY']['mb_per_s']:.0f}", f"{u['DIST']['mb_per_s']:.0f}",
    f"sha256 {s['openssl_sha256_mb_per_s']:.0f}", ratio(u["RY"]["mb_per_s"], u["DIST"]["mb_per_s"]),
    ratio(u["RY"]["mb_per_s"], s["openssl_sha256_mb_per_s"]) + " of sha256",
    ">= 3x dist, >= 0.5x sha256")
if "huge_RY" in s:
    h = {k: s[f"huge_{k}"] for k in ["RY", "DIST"]}
    row(f"{sz['huge']} push then pull: peak RSS MiB", f"{h['RY']['peak_rss_mib']:.1f}",
        f"{h['DIST']['peak_rss_mib']:.1f}", "-", ratio(h["RY"]["peak_rss_mib"], h["DIST"]["peak_rss_mib"]),
        "-", "< 64 MiB")
    row("  push / pull MB/s", f"{h['RY']['push_mb_per_s']:.0f} / {h['RY']['pull_mb_per_s']:.0f}",
        f"{h['DIST']['push_mb_per_s']:.0f} / {h['DIST']['pull_mb_per_s']:.0f}", "-", "-", "-", "")
    disk = s["disk_direct_read_mb_per_s"]
    cold = "cold" if s["huge_pull_cold"] else "page cache not dropped (not root)"
    row(f"  pull vs the disk's O_DIRECT read ({disk:.0f} MB/s), {cold}",
        ratio(h["RY"]["pull_mb_per_s"], disk), ratio(h["DIST"]["pull_mb_per_s"], disk), "-", "-",
        "-", ">= 0.6 of the disk")
if "basic_user" in s:
    a, u = s["basic_anon"], s["basic_user"]
    row("manifest GET, Basic on every request: req/s", f"{u['requests_per_s']:.0f}",
        f"anonymous {a['requests_per_s']:.0f}", "-", "-",
        ratio(u["requests_per_s"], a["requests_per_s"]) + " of anonymous", ">= 0.9x anonymous")
    t = s["basic_bearer"]
    row("manifest GET, Bearer token reused: req/s", f"{t['requests_per_s']:.0f}",
        f"anonymous {a['requests_per_s']:.0f}", "-", "-",
        ratio(t["requests_per_s"], a["requests_per_s"]) + " of anonymous", ">= 0.9x anonymous")
if "tls_RYT" in s:
    t, n = s["tls_RYT"], s["tls_NGXT"]
    row("TLS manifest GET, 64 conns: req/s", f"{t['manifest_requests_per_s']:.0f}", "-",
        f"{n['manifest_requests_per_s']:.0f}", "-",
        ratio(t["manifest_requests_per_s"], n["manifest_requests_per_s"]), ">= 1.5x nginx")
    row(f"TLS blob GET {sz['blob']}, 16 streams: MB/s", f"{t['blob_mb_per_s']:.0f}", "-",
        f"{n['blob_mb_per_s']:.0f}", "-", ratio(t["blob_mb_per_s"], n["blob_mb_per_s"]),
        ">= 1.0x nginx")
    row("  server CPU s per GB", f"{t['blob_cpu_s_per_gb']:.2f}", "-",
        f"{n['blob_cpu_s_per_gb']:.2f}", "-", ratio(t["blob_cpu_s_per_gb"], n["blob_cpu_s_per_gb"]),
        "(note)")
    row("TLS handshakes/s (new connection each)", f"{t['handshakes_per_s']:.0f}", "-",
        f"{n['handshakes_per_s']:.0f}", "-", ratio(t["handshakes_per_s"], n["handshakes_per_s"]),
        ">= nginx")
head = ("workload", "ringyard", "distribution", "nginx", "ry/dist", "ry/nginx", "target")
w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
def line(r):
    return "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
print(line(head))
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in rows:
    print(line(r))
errors = sum(v.get("errors", 0) for k, v in s.items() if isinstance(v, dict))
print(f"\nerrors across all runs: {errors}")
sys.exit(1 if errors else 0)
PY
say "figures: $OUT (summary.json)"
