#!/usr/bin/env bash
# ringyard side by side with the reference registry (distribution 2.8, Debian's docker-registry)
# and nginx serving the same blob files (the ceiling for static bytes), on this machine, in one
# run. Every server gets the same generated images; every workload runs against each in turn;
# one table of figures and ratios is printed at the end, and every figure is kept as JSON.
#
# Usage: loadtest/compare.sh [--smoke] [--skip-huge] [--auth] [--scale] [--gc] [--scan]
#                             [--only gc|scan] [--out DIR]
#   --smoke      seconds per workload and small sizes: checks the harness works (CI runs this);
#                includes the gc and scan workloads at their small sizes
#   --skip-huge  leave out the 10 GiB push and pull
#   --auth       also the authentication workloads (below); the default run leaves them out
#   --scale      also the S3 + PostgreSQL column (below): a PostgreSQL and an s3s-fs started
#                here, two ringyard nodes over them, distribution with its S3 driver
#   --gc         also the garbage collection workload (below), on a ringyard of its own
#   --scan       also the vulnerability scanning workload (below), on ringyards of its own
#   --only gc    only the garbage collection workload: no distribution, no nginx, nothing else
#   --only scan  only the scanning workload (likewise)
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
#   s3-pull   (--scale) the pull workload split over two nodes on S3 + PostgreSQL, half the
#             clients each, caches warm; then once more after both nodes restart with empty
#             caches (cold: every layer from S3), with the bytes each node read from S3
#   s3-manifest (--scale) the manifest workload against a node on the PostgreSQL engine
#   s3-push   (--scale) the push workload into S3 through a node against the S3 server's own
#             ingest (boto3's multipart upload of the same size) on s3s-fs; and through a node
#             against distribution's S3 driver and boto3 on moto (distribution continues an
#             upload with ListMultipartUploads, which s3s-fs lacks)
#   s3-huge   (--scale, without --skip-huge) the huge push through one node and pull through
#             the other, each node's peak RSS
#   gc        (--gc, --only gc, --smoke) a ringyard of its own with gc.grace 0s, seeded with
#             10,000 images of 4 layers (1-4 KiB) and a config: 10,000 manifests, 50,000 blobs
#             (smoke: 200 and 1,000), and the pull workload's image; every 5th manifest
#             deleted by digest (2,000: their 10,000 blobs, and the manifests' own bytes, are
#             then garbage). Timed: `ringyard gc --dry-run` (the mark alone, over the whole
#             registry) and `ringyard gc --delete`, both through the running registry's admin
#             socket (wall clock, and the time the registry logs). In each of ROUNDS rounds,
#             the pull workload (its clients, for 10 s; smoke: 2 s) without GC, the baseline,
#             then again while dry runs follow each other for the whole run; in the first
#             round between the two, the pull workload while the delete runs (from 0.5 s
#             before it until it returns). p99 of each against the baseline's (target <=
#             1.5x). Checks: the delete removed at least the deleted images' layers and
#             configs; afterwards a surviving image of the set and the pull image still pull,
#             every digest verified
#   scan      (--scan, --only scan, --smoke) four ringyards of their own (scan.poll 100ms):
#             scanning on push; on push off; a policy blocking critical findings on "**"; one
#             for the rescan. Fixtures made here by loadtest/scan_bench.py, deterministic:
#             100,000 OSV records (smoke: 2,000) in a zip as osv.dev's, over Debian:12, PyPI,
#             npm, Go and crates.io (ECOSYSTEM/SEMVER ranges, some last_affected, CVSS_V3,
#             aliases), a tenth naming packages the image has (never critical); an image of
#             200 MB (smoke: 10 MB) in 5 gzip layers: a Debian 12 base (dpkg status of 400
#             packages with Source: lines), 200 Python dist-info METADATA, 1,000 npm
#             package.json, a Cargo.lock, and incompressible filler files. Timed:
#             `ringyard vulndb import` of the records while the registry runs (records/s); the
#             image pushed (its scan on push reported), then scanned 3 times by POST .../scan,
#             its blobs dropped from the page cache before each (as after a push: ringyard
#             writes blobs with O_DIRECT), wall time from the POST to the scan counted in
#             /metrics (median; target < 5 s) and the registry's VmRSS sampled every 10 ms,
#             peak minus the RSS just before (max; target < 128 MiB); manifest GET at 64
#             connections, ROUNDS x 5 s (smoke: 1 s), with the policy on against off, of the
#             scanned image (its findings all below critical: pulls allowed, each judged) and
#             of a small clean one (target >= 0.9x); pushes of a 1 GiB tar layer (smoke: 32
#             MiB) of 1 MiB files, streamed, with a config of its own (`loadtest push --tar`),
#             scan on push against off, ROUNDS rounds, each timed push right after an untimed
#             one whose scan runs beside it (target >= 0.95x); 1,000 small images (smoke: 50)
#             with a dpkg status of 4 packages pushed and scanned, then an import of the same
#             records plus 50 naming those packages: seconds from the import's end until
#             ringyard_scan_rescans_total has grown by 1,000 (target: seconds, read as < 10 s,
#             and no scan run). Each figure with its target and pass/miss in the table and in
#             summary.json (scan); a miss is not an error
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
SCALE=0
GC=0
SCAN=0
ONLY=
OUT=
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --skip-huge) SKIP_HUGE=1 ;;
        --auth) AUTH=1 ;;
        --scale) SCALE=1 ;;
        --gc) GC=1 ;;
        --scan) SCAN=1 ;;
        --only)
            case "${2:-}" in
                gc|scan) ONLY=$2 ;;
                *) echo "compare.sh: --only takes gc or scan" >&2; exit 2 ;;
            esac
            shift ;;
        --out) OUT=$2; shift ;;
        -h|--help) sed -n '2,94p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "compare.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$SMOKE" = 1 ]; then GC=1; SCAN=1; fi
case "$ONLY" in
    gc) GC=1; SCAN=0 ;;
    scan) SCAN=1; GC=0 ;;
esac
if [ -n "$ONLY" ] && { [ "$AUTH" = 1 ] || [ "$SCALE" = 1 ]; }; then
    echo "compare.sh: --only $ONLY runs nothing of --auth or --scale" >&2
    exit 2
fi

say() { echo "compare: $*" >&2; }

# --- what the run needs ---------------------------------------------------------------------

missing=()
if [ -z "$ONLY" ]; then
    command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
fi
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "$SCALE" = 1 ]; then
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    SUDO=
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" </dev/null >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ "$SCALE" = 1 ]; then
    S3S=$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")
    if [ ! -x "$S3S" ]; then
        say "installing s3s-fs (a few minutes)"
        cargo install s3s-fs@0.14.1 --features binary --locked </dev/null >&2
    fi
    # moto (distribution's S3 driver needs ListMultipartUploads, which s3s-fs lacks) and boto3
    # (the S3 server's own ingest figure): the CI's moto venv has both, else a venv here.
    BOTO_PY=
    for venv in "${XDG_CACHE_HOME:-$HOME/.cache}/ringyard-ci/moto-venv" \
        "${XDG_CACHE_HOME:-$HOME/.cache}/ringyard-compare/venv"; do
        if [ -x "$venv/bin/moto_server" ] && "$venv/bin/python" -c 'import boto3' 2>/dev/null; then
            BOTO_PY=$venv/bin/python
            MOTO=$venv/bin/moto_server
            break
        fi
    done
    if [ -z "$BOTO_PY" ]; then
        venv="${XDG_CACHE_HOME:-$HOME/.cache}/ringyard-compare/venv"
        say "installing moto and boto3 into $venv"
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install --quiet 'moto[server]' boto3 </dev/null >&2
        BOTO_PY=$venv/bin/python
        MOTO=$venv/bin/moto_server
    fi
fi

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
PG_PID=
cleanup() {
    local pid
    [ -z "$PG_PID" ] || kill -INT "$PG_PID" 2>/dev/null || true
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
        "$WORK/nginx" "$WORK/scale" "$WORK/ringyard-gc" "$WORK/scan"
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

lt() { # NAME ARGS...: one loadtest run, its JSON kept as OUT/NAME.json
    local name=$1
    shift
    if ! "$LOADTEST" "$@" --json >"$OUT/$name.json" 2>"$OUT/$name.err"; then
        say "loadtest $name failed:"
        cat "$OUT/$name.err" >&2
        return 1
    fi
}

# --- sizes ------------------------------------------------------------------------------------

# The request-rate and throughput workloads run ROUNDS times, the servers taking turns within
# a round, and the table shows the median round: on a shared 2-core machine one run of a few
# seconds moves by 10-30%.
if [ "$SMOKE" = 1 ]; then
    ROUNDS=1; PULLS=200; PULL_CLIENTS=20; MANIFEST_SECS=2; BLOB_SIZE=64MiB; BLOB_REQS=16
    PUSH_SIZE=64MiB; PUSH_COUNT=1; HUGE_SIZE=256MiB
    GC_IMAGES=200; GC_PULL_SECS=2
    SCAN_RECORDS=2000; SCAN_IMAGE_MB=10; SCAN_PUSH_SIZE=32MiB; SCAN_GET_SECS=1
    SCAN_RESCAN_IMAGES=50
else
    ROUNDS=3; PULLS=1000; PULL_CLIENTS=100; MANIFEST_SECS=5; BLOB_SIZE=1GiB; BLOB_REQS=16
    PUSH_SIZE=1GiB; PUSH_COUNT=3; HUGE_SIZE=10GiB
    GC_IMAGES=10000; GC_PULL_SECS=10
    SCAN_RECORDS=100000; SCAN_IMAGE_MB=200; SCAN_PUSH_SIZE=1GiB; SCAN_GET_SECS=5
    SCAN_RESCAN_IMAGES=1000
fi
SMALL_IMAGE=bench/small:v1
SMALL_LAYERS=2MiB,768KiB,256KiB
# The node metric that counts bytes read from the remote backend (the S3 reads of a cold pull).
S3_READ_METRIC=ringyard_blob_cache_remote_read_bytes_total
ACCEPT='Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*'

SHA_MBPS=0
# ----- with --only gc, everything from here to the gc workload is left out ---------------------
if [ -z "$ONLY" ]; then

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

if [ "$SCALE" = 1 ]; then
    # PostgreSQL in a cluster of its own (initdb refuses root: as root it runs as postgres).
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    PGDIR=$WORK/scale/pg
    mkdir -p "$PGDIR"
    as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
    [ "$(id -u)" = 0 ] && chown postgres: "$PGDIR"
    as_pg "$PG_BIN/initdb" -D "$PGDIR/data" -U ringyard --auth=trust >"$WORK/pg-initdb.log" 2>&1
    PG_PORT=$(free_port)
    as_pg "$PG_BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w -o \
        "-p $PG_PORT -k $PGDIR -c listen_addresses=127.0.0.1" start >&2
    # Stopped with the rest; SIGINT is PostgreSQL's fast shutdown (SIGTERM waits for clients).
    PG_PID=$(head -n 1 "$PGDIR/data/postmaster.pid")
    PIDS+=("$PG_PID")
    as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U ringyard ringyard
    DATABASE_URL=postgres://ringyard@127.0.0.1:$PG_PORT/ringyard

    # s3s-fs over a directory: a bucket is a directory in it.
    S3_PORT=$(free_port)
    S3_KEY=compare
    S3_SECRET=compare-secret-key
    mkdir -p "$WORK/scale/s3/ringyard" "$WORK/scale/s3/distribution"
    "$S3S" --host 127.0.0.1 --port "$S3_PORT" --access-key "$S3_KEY" --secret-key "$S3_SECRET" \
        "$WORK/scale/s3" >"$WORK/s3s-fs.log" 2>&1 &
    PIDS+=("$!")
    S3_URL=http://127.0.0.1:$S3_PORT

    # Two ringyard nodes over them: nothing shared but S3 and PostgreSQL.
    start_node() { # N: (re)starts node N on its port, its PID in RYS<N>_PID
        local n=$1 port_var=RYS${1}_PORT
        "$RINGYARD" serve --listen "127.0.0.1:${!port_var}" --root "$WORK/scale/node$n" --quiet \
            --no-access-log --config "$WORK/scale/node.yaml" 2>>"$WORK/ringyard-s3-$n.log" &
        PIDS+=("$!")
        printf -v "RYS${n}_PID" %s "$!"
    }
    stop_node() { # N
        local pid_var=RYS${1}_PID
        kill "${!pid_var}"
        for _ in $(seq 1 200); do kill -0 "${!pid_var}" 2>/dev/null || break; sleep 0.1; done
        wait "${!pid_var}" 2>/dev/null || true
    }
    cat >"$WORK/scale/node.yaml" <<EOF2
storage:
  backend: s3
  s3:
    bucket: ringyard
    region: us-east-1
    endpoint: $S3_URL
    path_style: true
    access_key: $S3_KEY
    secret_key: $S3_SECRET
  cache:
    disk_size_gb: 20
database:
  url: $DATABASE_URL
EOF2
    RYS1_PORT=$(free_port)
    RYS2_PORT=$(free_port)
    wait_node() { # N
        local url_var=RYS$1
        wait_http "${!url_var}/v2/" || { tail -n 20 "$WORK/ringyard-s3-$1.log" >&2; exit 1; }
    }
    RYS1=http://127.0.0.1:$RYS1_PORT
    RYS2=http://127.0.0.1:$RYS2_PORT
    start_node 1
    wait_node 1
    # The second after the first has applied the schema.
    start_node 2
    wait_node 2

    # moto, for the push comparison with distribution, whose S3 driver continues an upload
    # with ListMultipartUploads (s3s-fs has none): a node of ringyard on it too, with a
    # database of its own.
    MOTO_PORT=$(free_port)
    env -u AWS_CA_BUNDLE "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
    PIDS+=("$!")
    MOTO_URL=http://127.0.0.1:$MOTO_PORT
    wait_http "$MOTO_URL/moto-api/" || { tail -n 20 "$WORK/moto.log" >&2; exit 1; }
    "$BOTO_PY" - "$MOTO_URL" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="compare",
                  aws_secret_access_key="compare-secret-key", region_name="us-east-1")
for bucket in ["ringyard", "distribution"]:
    s3.create_bucket(Bucket=bucket)
PY
    as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U ringyard ringyard_moto
    sed -e "s#$S3_URL#$MOTO_URL#" -e "s#/ringyard\$#/ringyard_moto#" "$WORK/scale/node.yaml" \
        >"$WORK/scale/node-moto.yaml"
    RYM_PORT=$(free_port)
    "$RINGYARD" serve --listen "127.0.0.1:$RYM_PORT" --root "$WORK/scale/node-moto" --quiet \
        --no-access-log --config "$WORK/scale/node-moto.yaml" 2>"$WORK/ringyard-moto.log" &
    PIDS+=("$!")
    RYM=http://127.0.0.1:$RYM_PORT
    wait_http "$RYM/v2/" || { tail -n 20 "$WORK/ringyard-moto.log" >&2; exit 1; }

    # distribution with its S3 driver, on moto.
    DISTS_PORT=$(free_port)
    cat >"$WORK/distribution-s3.yml" <<EOF2
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  s3:
    accesskey: $S3_KEY
    secretkey: $S3_SECRET
    region: us-east-1
    regionendpoint: $MOTO_URL
    bucket: distribution
    secure: false
    v4auth: true
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$DISTS_PORT
EOF2
    # Without AWS_CA_BUNDLE: the endpoint is plain HTTP, and distribution's AWS SDK refuses to
    # start when that variable is set ("unable to load custom CA bundle").
    env -u AWS_CA_BUNDLE docker-registry serve "$WORK/distribution-s3.yml" \
        2>"$WORK/distribution-s3.log" &
    DISTS_PID=$!
    PIDS+=("$DISTS_PID")
    DISTS=http://127.0.0.1:$DISTS_PORT
    wait_http "$DISTS/v2/" || { tail -n 20 "$WORK/distribution-s3.log" >&2; exit 1; }
fi

# --- seeding: the same bytes everywhere --------------------------------------------------------

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

if [ "$SCALE" = 1 ]; then
    s3_metric() { # URL NAME: the sum of a metric's samples on that node's /metrics (0 if absent)
        python3 - "$1/metrics" "$2" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
total = 0.0
for line in text.splitlines():
    if line.startswith(sys.argv[2]) and line[len(sys.argv[2]):len(sys.argv[2]) + 1] in (" ", "{"):
        total += float(line.rsplit(" ", 1)[1])
print(int(total))
PY
    }
    s3_pulls() { # NAME CLIENTS PULLS: the pull workload on both nodes at once, half each
        local half_c=$(($2 / 2)) half_p=$(($3 / 2)) a b failed=0
        lt "$1-n1" pull --registry "$RYS1" --image "$SMALL_IMAGE" --no-verify \
            --clients "$half_c" --pulls "$half_p" --max-seconds 300 &
        a=$!
        lt "$1-n2" pull --registry "$RYS2" --image "$SMALL_IMAGE" --no-verify \
            --clients "$half_c" --pulls "$half_p" --max-seconds 300 &
        b=$!
        wait "$a" || failed=1
        wait "$b" || failed=1
        return "$failed"
    }

    say "S3 + PostgreSQL: the small image pushed through node 1, a verified pull through each node"
    lt seed-small-RYS seed --registry "$RYS1" --image "$SMALL_IMAGE" --layers "$SMALL_LAYERS"
    [ "$(jq -r .manifest_digest "$OUT/seed-small-RYS.json")" = "$SMALL_DIGEST" ] ||
        { say "seed-small-RYS: different manifest digest"; exit 1; }
    for n in 1 2; do
        url_var=RYS$n
        lt "s3-pull-verify-$n" pull --registry "${!url_var}" --image "$SMALL_IMAGE" \
            --clients 10 --pulls 50 --max-seconds 120
    done
    say "S3 warm pulls: $ROUNDS x $PULLS pulls by $PULL_CLIENTS clients over two nodes, single-node ringyard in the same rounds"
    for round in $(seq 1 "$ROUNDS"); do
        lt "s3-pull-RY-$round" pull --registry "$RY" --image "$SMALL_IMAGE" --no-verify \
            --clients "$PULL_CLIENTS" --pulls "$PULLS" --max-seconds 300
        s3_pulls "s3-pull-$round" "$PULL_CLIENTS" "$PULLS"
    done

    say "S3 cold pulls: both nodes restarted with empty caches, then $PULLS pulls by $PULL_CLIENTS clients"
    for n in 1 2; do
        stop_node "$n"
        rm -rf "$WORK/scale/node$n/cache"
        start_node "$n"
    done
    wait_node 1
    wait_node 2
    s3_pulls s3-cold "$PULL_CLIENTS" "$PULLS"
    for n in 1 2; do
        url_var=RYS$n
        s3_metric "${!url_var}" "$S3_READ_METRIC" >"$OUT/s3-cold-read-bytes-$n.txt"
    done
    jq '[.manifest_size, .config.size, (.layers[].size)] | add' "$OUT/seed-small-RYS.json" \
        >"$OUT/s3-image-bytes.txt"

    say "S3 manifest GET by tag on the PostgreSQL engine, 64 connections, $ROUNDS x ${MANIFEST_SECS} s, SQLite ringyard in the same rounds"
    for round in $(seq 1 "$ROUNDS"); do
        for srv in RY RYS1; do
            lt "s3-manifest-$srv-$round" get --url "${!srv}/v2/bench/small/manifests/v1" \
                --header "$ACCEPT" --connections 64 --duration "$MANIFEST_SECS" \
                --expect-digest "$SMALL_DIGEST"
        done
    done

    say "S3 push: $PUSH_COUNT x $PUSH_SIZE through a node and with boto3 on s3s-fs; through a node, distribution's S3 driver and boto3 on moto"
    for srv in RYS1 RYM DISTS; do
        lt "s3-push-$srv" push --registry "${!srv}" --size "$PUSH_SIZE" --count "$PUSH_COUNT" \
            --clients 1 --mode stream --repo bench/push --max-seconds 900 --timeout 300
    done
    "$LOADTEST" seed --out-dir "$WORK/scale/probe" --image s3/probe --blob-only "$PUSH_SIZE" \
        --json >"$OUT/s3-probe-seed.json"
    PROBE_FILE=$(find "$WORK/scale/probe" -type f | head -n 1)
    # boto3's multipart upload of the same file: each S3 server's own ingest (the ceiling of
    # what a client of it can reach), on s3s-fs and on moto.
    boto3_push() { # ENDPOINT: figures as JSON on stdout
        "$BOTO_PY" - "$PROBE_FILE" "$1" "$S3_KEY" "$S3_SECRET" "$PUSH_COUNT" <<'PY'
import json, os, sys, time
import boto3, botocore.config
from boto3.s3.transfer import TransferConfig
path, url, key, secret, count = sys.argv[1:6]
opts = {"s3": {"addressing_style": "path"}}
try:  # botocore 1.36+ adds checksums the S3 server may not know; only when required
    cfg = botocore.config.Config(request_checksum_calculation="when_required", **opts)
except TypeError:
    cfg = botocore.config.Config(**opts)
s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=key, aws_secret_access_key=secret,
                  region_name="us-east-1", config=cfg)
size = os.path.getsize(path)
transfer = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20)
runs = []
for i in range(int(count)):
    t = time.monotonic()
    s3.upload_file(path, "ringyard", f"compare-probe/{i}", Config=transfer)
    runs.append(size / (time.monotonic() - t) / 1e6)
    s3.delete_object(Bucket="ringyard", Key=f"compare-probe/{i}")
json.dump({"mb_per_s": sorted(runs)[len(runs) // 2], "runs": runs, "errors": 0}, sys.stdout)
PY
    }
    boto3_push "$S3_URL" >"$OUT/s3-push-boto3.json"
    boto3_push "$MOTO_URL" >"$OUT/s3-push-boto3moto.json"
    rm -rf "$WORK/scale/probe"

    if [ "$SKIP_HUGE" = 0 ]; then
        say "S3 huge: $HUGE_SIZE pushed through node 1, pulled through node 2, peak RSS of each"
        reset_peak "$RYS1_PID"
        reset_peak "$RYS2_PID"
        # The closing PUT waits for the server-side copy past 5 GiB (UploadPartCopy), which
        # s3s-fs does at about 30 MB/s.
        lt s3-huge-push seed --registry "$RYS1" --image bench/huge --blob-only "$HUGE_SIZE" \
            --max-seconds 1800 --timeout 1200
        digest=$(jq -r .digest "$OUT/s3-huge-push.json")
        lt s3-huge-pull get --url "$RYS2/v2/bench/huge/blobs/$digest" --connections 1 \
            --requests 1 --max-seconds 1800 --timeout 300
        peak_rss_mib "$RYS1_PID" >"$OUT/s3-huge-rss-1.txt"
        peak_rss_mib "$RYS2_PID" >"$OUT/s3-huge-rss-2.txt"
    fi
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

fi
# ----- (end of what --only gc leaves out) ------------------------------------------------------

# --- garbage collection -------------------------------------------------------------------------

if [ "$GC" = 1 ]; then
    # Every image: 4 layers of 1-4 KiB and a config, all distinct (generator seed 2, apart
    # from the pull image's seed 1); spread over 100 repositories.
    GC_LAYERS=1KiB,2KiB,3KiB,4KiB
    GC_EVERY=5 # every 5th image's manifest is deleted: a fifth of the blobs become garbage
    GC_LEAD=0.5 # seconds the pulls run before a collection starts
    GC_ROOT=$WORK/ringyard-gc
    GC_LOG=$WORK/ringyard-gc.log
    say "gc: a ringyard with gc.grace 0s; $GC_IMAGES images of 4 layers and a config ($((GC_IMAGES * 5)) blobs), every ${GC_EVERY}th manifest then deleted"
    RYG_PORT=$(free_port)
    mkdir -p "$GC_ROOT"
    # At info level (the registry logs each collection and its time), access log off.
    "$RINGYARD" serve --listen "127.0.0.1:$RYG_PORT" --root "$GC_ROOT" --no-access-log \
        --gc-grace 0s 2>"$GC_LOG" &
    RYG_PID=$!
    PIDS+=("$RYG_PID")
    RYG=http://127.0.0.1:$RYG_PORT
    wait_http "$RYG/v2/" || { tail -n 20 "$GC_LOG" >&2; exit 1; }

    # The registry logs each collection it was asked for, in order, with its own time
    # (`... asked by `ringyard gc`: <summary> in <time>`): the Nth line is the Nth gc_cmd's.
    GC_SEQ=0
    gc_cmd() { # NAME --dry-run|--delete: `ringyard gc` (through the admin socket), timed
        local name=$1 mode=$2 start end rc=0 output
        GC_SEQ=$((GC_SEQ + 1))
        start=$(date +%s.%N)
        output=$(timeout 900 "$RINGYARD" gc "$mode" --root "$GC_ROOT" 2>"$OUT/$name.err") || rc=$?
        end=$(date +%s.%N)
        # (printf, not jq: a process less between back-to-back runs)
        output=${output//\\/\\\\}
        output=${output//\"/\\\"}
        output=${output//$'\n'/\\n}
        printf '{"name": "%s", "mode": "%s", "seq": %d, "start": %s, "end": %s, "exit": %d, "output": "%s"}\n' \
            "$name" "$mode" "$GC_SEQ" "$start" "$end" "$rc" "$output" >"$OUT/$name.json"
        if [ "$rc" != 0 ]; then
            say "ringyard gc $mode failed ($rc):"
            cat "$OUT/$name.err" >&2
            return 1
        fi
    }
    gc_pull() { # NAME ARGS...: the pull workload in the background, its PID in GC_PULL_PID
        local name=$1
        shift
        date +%s.%N >"$OUT/$name.start"
        "$LOADTEST" pull --registry "$RYG" --image "$SMALL_IMAGE" --no-verify \
            --clients "$PULL_CLIENTS" --max-seconds 900 "$@" --json \
            >"$OUT/$name.json" 2>"$OUT/$name.err" &
        GC_PULL_PID=$!
        PIDS+=("$GC_PULL_PID")
    }
    gc_pull_wait() { # NAME
        local rc=0 pid kept=()
        wait "$GC_PULL_PID" || rc=$?
        # Gone: out of the list the cleanup kills (its PID may be reused later).
        for pid in "${PIDS[@]}"; do [ "$pid" = "$GC_PULL_PID" ] || kept+=("$pid"); done
        PIDS=("${kept[@]}")
        if [ "$rc" != 0 ]; then
            say "loadtest $1 failed:"
            cat "$OUT/$1.err" >&2
            return 1
        fi
    }

    lt gc-seed-small seed --registry "$RYG" --image "$SMALL_IMAGE" --layers "$SMALL_LAYERS"
    lt gc-seed seed --registry "$RYG" --image bench/gc:v --layers "$GC_LAYERS" \
        --images "$GC_IMAGES" --repos 100 --seed 2 --clients 32 --list "$OUT/gc-images.txt" \
        --max-seconds 900
    awk -v every="$GC_EVERY" 'NR % every == 1' "$OUT/gc-images.txt" >"$OUT/gc-garbage.txt"
    lt gc-delete-manifests delete --registry "$RYG" --list "$OUT/gc-garbage.txt" --clients 16 \
        --max-seconds 300
    lt gc-pull-verify pull --registry "$RYG" --image "$SMALL_IMAGE" --clients 10 --pulls 50 \
        --max-seconds 120

    say "gc: ringyard gc --dry-run over the whole registry (the mark alone)"
    gc_cmd gc-mark --dry-run

    for round in $(seq 1 "$ROUNDS"); do
        say "gc: round $round of $ROUNDS: $PULL_CLIENTS clients pulling for $GC_PULL_SECS s without GC (the baseline)"
        gc_pull "gc-pull-base-$round" --duration "$GC_PULL_SECS"
        gc_pull_wait "gc-pull-base-$round"

        if [ "$round" = 1 ]; then
            say "gc: ringyard gc --delete while $PULL_CLIENTS clients pull (from ${GC_LEAD} s before it until it returns)"
            rm -f "$WORK/gc-stop"
            gc_pull gc-pull-delete --stop-file "$WORK/gc-stop"
            sleep "$GC_LEAD"
            gc_cmd gc-delete --delete || { touch "$WORK/gc-stop"; exit 1; }
            touch "$WORK/gc-stop"
            gc_pull_wait gc-pull-delete
            python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' \
                "$RYG/metrics" >"$OUT/gc-metrics.txt"
        fi

        say "gc: round $round of $ROUNDS: dry runs back to back (each reads the whole graph) while $PULL_CLIENTS clients pull for $GC_PULL_SECS s"
        gc_pull "gc-pull-dry-$round" --duration "$GC_PULL_SECS"
        sleep "$GC_LEAD"
        # Until the pulls' end (the last dry run may outlast them a little).
        until_ns=$(($(date +%s%N) + (GC_PULL_SECS * 1000000000) - 500000000))
        n=0
        while [ "$(date +%s%N)" -lt "$until_ns" ]; do
            n=$((n + 1))
            gc_cmd "gc-dry-$round-$n" --dry-run
        done
        gc_pull_wait "gc-pull-dry-$round"
    done

    say "gc: afterwards, a surviving image of the set and the pull image, every digest verified"
    survivor=$(awk -v every="$GC_EVERY" 'NR % every == 2 { print; exit }' "$OUT/gc-images.txt")
    lt gc-after-survivor pull --registry "$RYG" --image "${survivor%@*}" --clients 1 --pulls 1 \
        --max-seconds 60
    lt gc-after-small pull --registry "$RYG" --image "$SMALL_IMAGE" --clients 10 --pulls 50 \
        --max-seconds 120
    grep 'garbage collection asked by' "$GC_LOG" >"$OUT/gc-log.txt" || true
fi

# --- vulnerability scanning ---------------------------------------------------------------------

if [ "$SCAN" = 1 ]; then
    # Four ringyards of their own (scan.poll 100ms, so that a scan starts within 0.1 s of being
    # asked for and the times below are the scans'): scanning on push and no policy (the scans,
    # the pushes with scanning, the GETs without a policy), scanning on push off (the pushes
    # without), a policy blocking critical findings (the GETs with it), and one for the rescan.
    SCAN_DIR=$WORK/scan
    SB=$REPO_ROOT/loadtest/scan_bench.py
    mkdir -p "$SCAN_DIR"
    cat >"$SCAN_DIR/policy.yaml" <<EOF
scan:
  policies:
    - repository: "**"
      block_severity: critical
EOF
    scan_ry() { # VAR NAME ARGS...: starts a ringyard; its URL in VAR, its PID in VAR_PID
        local var=$1 name=$2 port
        shift 2
        port=$(free_port)
        mkdir -p "$SCAN_DIR/$name"
        "$RINGYARD" serve --listen "127.0.0.1:$port" --root "$SCAN_DIR/$name" --quiet \
            --no-access-log --scan-poll 100ms "$@" 2>"$WORK/ringyard-$name.log" &
        PIDS+=("$!")
        printf -v "${var}_PID" %s "$!"
        printf -v "$var" %s "http://127.0.0.1:$port"
        wait_http "http://127.0.0.1:$port/v2/" || { tail -n 20 "$WORK/ringyard-$name.log" >&2; exit 1; }
    }
    sb() { # NAME SUBCOMMAND ARGS...: one step of loadtest/scan_bench.py, its JSON as OUT/NAME.json
        local name=$1
        shift
        if ! timeout 1800 python3 "$SB" "$@" >"$OUT/$name.json" 2>"$OUT/$name.err"; then
            say "scan_bench.py $name failed:"
            cat "$OUT/$name.err" >&2
            return 1
        fi
    }
    scans_finished() { # URL: scans the registry has finished (completed + failed)
        python3 "$SB" scans-finished --registry "$1" | jq -r '.finished | floor'
    }
    scan_cpu() { # PID: CPU time (user + system, clock ticks) of the registry's scan job thread
        local t total=0
        for t in /proc/"$1"/task/*; do
            [ "$(cat "$t/comm" 2>/dev/null)" = ringyard-job-sc ] || continue
            total=$((total + $(awk '{print $14 + $15}' "$t/stat")))
        done
        echo "$total"
    }
    scan_ry RYS scan
    scan_ry RYSO scan-off --no-scan-on-push
    scan_ry RYSP scan-policy --config "$SCAN_DIR/policy.yaml"
    scan_ry RYR scan-rescan

    say "scan: fixtures: $SCAN_RECORDS OSV records (a zip, as osv.dev's), an image of ${SCAN_IMAGE_MB} MB in 5 gzip layers"
    sb scan-osv osv "$SCAN_DIR/osv.zip" --records "$SCAN_RECORDS"
    sb scan-osv-rescan osv-rescan "$SCAN_DIR/osv-rescan.zip" --base "$SCAN_DIR/osv.zip"
    sb scan-image image "$SCAN_DIR/image" --mb "$SCAN_IMAGE_MB" --layers 5

    say "scan: ringyard vulndb import of the $SCAN_RECORDS records while the registry runs (three registries)"
    for name in scan scan-policy scan-rescan; do
        sb "$name-import" import --ringyard "$RINGYARD" --root "$SCAN_DIR/$name" \
            --data "$SCAN_DIR/osv.zip"
    done

    say "scan: the image pushed (scanned on push), and a small clean one"
    for srv in RYS RYSP; do
        sb "scan-push-image-$srv" push-image "$SCAN_DIR/image" --registry "${!srv}" \
            --repo bench/scan --tag v1
        # The scan on push of blobs never read (ringyard writes them with O_DIRECT).
        sb "scan-on-push-$srv" wait-scans --registry "${!srv}" --finished 1
        sb "scan-clean-$srv" small-images --registry "${!srv}" --repo bench/clean --count 1
        sb "scan-clean-wait-$srv" wait-scans --registry "${!srv}" --finished 2
    done
    SCAN_DIGEST=$(jq -r .manifest_digest "$OUT/scan-push-image-RYS.json")
    CLEAN_DIGEST=$(jq -r .first.digest "$OUT/scan-clean-RYS.json")

    say "scan: the image scanned 3 times (POST .../scan), its blobs dropped from the page cache before each, the registry's RSS sampled every 10 ms"
    sb scan-runs scan-runs --registry "$RYS" --pid "$RYS_PID" --repo bench/scan --ref v1 \
        --runs 3 --evict "$SCAN_DIR/scan"
    sb scan-runs-warm scan-runs --registry "$RYS" --pid "$RYS_PID" --repo bench/scan --ref v1 \
        --runs 1

    say "scan: manifest GET with the policy on and off, 64 connections, $ROUNDS x ${SCAN_GET_SECS} s each, the scanned image and the clean one"
    for round in $(seq 1 "$ROUNDS"); do
        for img in image clean; do
            if [ "$img" = image ]; then
                path=bench/scan/manifests/v1 digest=$SCAN_DIGEST
            else
                path=bench/clean-0/manifests/v0 digest=$CLEAN_DIGEST
            fi
            # Which goes first alternates, as for the pushes below.
            order="RYS RYSP"
            [ $((round % 2)) = 1 ] || order="RYSP RYS"
            for srv in $order; do
                lt "scan-get-$img-$srv-$round" get --url "${!srv}/v2/$path" --header "$ACCEPT" \
                    --connections 64 --duration "$SCAN_GET_SECS" --expect-digest "$digest"
            done
        done
    done

    say "scan: pushes of a $SCAN_PUSH_SIZE tar layer (streamed) with scan on push and off, $ROUNDS rounds; each timed push follows one whose scan runs beside it"
    seed=1000
    for round in $(seq 1 "$ROUNDS"); do
        # Which goes first alternates: with scanning on always first, 3 rounds measured 0.86x
        # where 5 rounds alternating (by hand, the same build) measured 1.01x.
        order="RYS RYSO"
        [ $((round % 2)) = 1 ] || order="RYSO RYS"
        for srv in $order; do
            pid_var=${srv}_PID
            before=$(scans_finished "${!srv}")
            for kind in primer timed; do
                seed=$((seed + 1))
                name=scan-push-$srv-$round
                [ "$kind" = timed ] || name=$name-primer
                [ "$kind" = primer ] || cpu0=$(scan_cpu "${!pid_var}")
                lt "$name" push --registry "${!srv}" --size "$SCAN_PUSH_SIZE" --tar --count 1 \
                    --clients 1 --mode stream --repo bench/scanpush --seed "$seed" \
                    --max-seconds 600 --timeout 120
            done
            # At the timed push's end: the scans finished (the primer's among them, or still
            # running), and the scan thread's CPU ticks during the push.
            echo "$before $(scans_finished "${!srv}") $(($(scan_cpu "${!pid_var}") - cpu0))" \
                >"$OUT/scan-push-$srv-$round.scans"
            if [ "$srv" = RYS ]; then
                # Both scans done before the next pushes: the other registry's run is quiet.
                sb "scan-push-wait-$round" wait-scans --registry "$RYS" \
                    --finished $((before + 2)) --timeout 600
            fi
        done
    done

    say "scan: rescan: $SCAN_RESCAN_IMAGES small images pushed and scanned, then an import naming their packages, timed to the rescans' end"
    sb scan-small small-images --registry "$RYR" --repo bench/rescan --count "$SCAN_RESCAN_IMAGES" \
        --clients 4
    sb scan-small-wait wait-scans --registry "$RYR" --finished "$SCAN_RESCAN_IMAGES" --timeout 900
    sb scan-rescan import --ringyard "$RINGYARD" --root "$SCAN_DIR/scan-rescan" \
        --data "$SCAN_DIR/osv-rescan.zip" --registry "$RYR" --rescans-of "$SCAN_RESCAN_IMAGES" \
        --check bench/rescan-1:v1
fi

# --- the table ----------------------------------------------------------------------------------

SUMMARY=$OUT/summary.json
python3 - "$OUT" "$SHA_MBPS" "$SKIP_HUGE" "$SMOKE" "$PUSH_SIZE" "$BLOB_SIZE" "$HUGE_SIZE" \
    "$PULL_CLIENTS" "$ROUNDS" "$AUTH" "$SCALE" "$GC" "$ONLY" "$SCAN" "${SCAN_RECORDS}" \
    "${SCAN_IMAGE_MB}" "${SCAN_PUSH_SIZE}" "${SCAN_RESCAN_IMAGES}" "${SCAN_GET_SECS}" >"$SUMMARY" <<'PY'
import glob, json, os, re, sys
out, sha, skip_huge, smoke = sys.argv[1], float(sys.argv[2]), sys.argv[3] == "1", sys.argv[4] == "1"
push_size, blob_size, huge_size, pull_clients = sys.argv[5:9]
rounds = int(sys.argv[9])
auth = sys.argv[10] == "1"
scale = sys.argv[11] == "1"
gc, only = sys.argv[12] == "1", sys.argv[13]
scan = sys.argv[14] == "1"
scan_records, scan_image_mb, scan_push_size, scan_rescan_images, scan_get_secs = sys.argv[15:20]
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
if not only:
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
if scale:
    def txt(name):
        with open(os.path.join(out, name + ".txt")) as f:
            return float(f.read())
    def both(name):
        """Two nodes pulling at once: the worse p99, the pulls of both."""
        a, b = j(f"{name}-n1"), j(f"{name}-n2")
        return {"p99_ms": max(a["pull"]["p99_ms"], b["pull"]["p99_ms"]),
                "pulls_per_s": a["pulls_done"] / a["elapsed_s"] + b["pulls_done"] / b["elapsed_s"],
                "errors": a["errors"] + b["errors"]}
    warm = sorted((both(f"s3-pull-{r}") | {"round": r} for r in range(1, rounds + 1)),
                  key=lambda x: x["p99_ms"])
    w = warm[len(warm) // 2]
    single = j(f"s3-pull-RY-{w['round']}")
    cold = both("s3-cold")
    image = txt("s3-image-bytes")
    m_sql, e1, _ = median_round("s3-manifest-RY", lambda r: r["requests_per_s"])
    m_pg, e2, _ = median_round("s3-manifest-RYS1", lambda r: r["requests_per_s"])
    push = {k: j(f"s3-push-{k}") for k in ["RYS1", "RYM", "DISTS", "boto3", "boto3moto"]}
    s["s3"] = {
        "pull_warm": {"p99_ms": w["p99_ms"], "pulls_per_s": w["pulls_per_s"],
                      "errors": sum(x["errors"] for x in warm),
                      "single_node_fs_p99_ms": single["pull"]["p99_ms"],
                      "p99_ms_rounds": [x["p99_ms"] for x in sorted(warm, key=lambda x: x["round"])]},
        "pull_cold": {"p99_ms": cold["p99_ms"], "errors": cold["errors"], "image_bytes": image,
                      "s3_read_bytes_per_node": [txt("s3-cold-read-bytes-1"),
                                                 txt("s3-cold-read-bytes-2")]},
        "manifest": {"pg_requests_per_s": m_pg["requests_per_s"],
                     "sqlite_requests_per_s": m_sql["requests_per_s"],
                     "pg_p99_ms": m_pg["latency"]["p99_ms"], "errors": e1 + e2},
        "push": {k: v["mb_per_s"] for k, v in push.items()} | {
            "errors": sum(v["errors"] for v in push.values())},
    }
    if not skip_huge:
        hp, hg = j("s3-huge-push"), j("s3-huge-pull")
        s["s3"]["huge"] = {"push_mb_per_s": hp["mb_per_s"], "pull_mb_per_s": hg["mb_per_s"],
                           "peak_rss_mib": [txt("s3-huge-rss-1"), txt("s3-huge-rss-2")],
                           "errors": hp["errors"] + hg["errors"]}
if gc:
    def since(text):
        """The time at the end of the registry's line (Rust's Debug of a Duration), in s."""
        m = re.search(r" in ([0-9.]+)(ns|µs|ms|s)$", text.strip())
        unit = {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
        return round(float(m.group(1)) * unit[m.group(2)], 3) if m else None
    def start(name):
        with open(os.path.join(out, name + ".start")) as f:
            return float(f.read())
    def gc_run(path):
        with open(path) as f:
            r = json.load(f)
        return r | {"wall_s": r["end"] - r["start"]}
    with open(os.path.join(out, "gc-log.txt")) as f:
        logged = f.read().splitlines()
    def registry_s(run):
        """The registry's own time for a gc_cmd run, from its line in the log."""
        return since(logged[run["seq"] - 1]) if run["seq"] <= len(logged) else None
    def pulls(p):
        return {"p99_ms": p["pull"]["p99_ms"], "p50_ms": p["pull"]["p50_ms"],
                "pulls": p["pulls_done"], "pulls_per_s": p["pulls_done"] / p["elapsed_s"],
                "elapsed_s": p["elapsed_s"]}
    seed, deleted = j("gc-seed"), j("gc-delete-manifests")
    mark = gc_run(os.path.join(out, "gc-mark.json"))
    sweep = gc_run(os.path.join(out, "gc-delete.json"))
    said = sweep["output"].strip().splitlines()[-1]
    m = re.match(r"Deleted (\d+) blobs?(?: and \d+ untagged manifests?)?, reclaimed (.+)$", said)
    blobs_deleted, reclaimed = (int(m.group(1)), m.group(2)) if m else (0, "?")
    with open(os.path.join(out, "gc-metrics.txt")) as f:
        metric = [l.split()[-1] for l in f if l.startswith("ringyard_gc_blobs_deleted_total ")]
    per_image = seed["layers_per_image"] + 1
    # At least the deleted images' layers and configs (their manifests' own bytes may count).
    short = int(blobs_deleted < deleted["deleted"] * per_image)
    base, base_errors, base_rounds = median_round("gc-pull-base", lambda r: r["pull"]["p99_ms"])
    during = j("gc-pull-delete")
    t0 = start("gc-pull-delete")
    dry = []
    for r in range(1, rounds + 1):
        p, t = j(f"gc-pull-dry-{r}"), start(f"gc-pull-dry-{r}")
        runs = [gc_run(f) for f in glob.glob(os.path.join(out, f"gc-dry-{r}-*.json"))]
        # Seconds of the pull run with a dry run going on.
        busy = sum(max(0.0, min(x["end"], t + p["elapsed_s"]) - max(x["start"], t)) for x in runs)
        walls = sorted(x["wall_s"] for x in runs)
        own = sorted(x for x in map(registry_s, runs) if x is not None)
        dry.append(pulls(p) | {"dry_runs": len(runs), "covered": busy / p["elapsed_s"],
                               "dry_run_median_s": walls[len(walls) // 2] if walls else 0,
                               "dry_run_registry_median_s": own[len(own) // 2] if own else None,
                               "errors": p["errors"]})
    d = sorted(dry, key=lambda x: x["p99_ms"])[len(dry) // 2]
    errors = (seed["errors"] + deleted["errors"] + base_errors + during["errors"]
              + sum(x["errors"] for x in dry) + j("gc-after-survivor")["errors"]
              + j("gc-after-small")["errors"] + short)
    s["gc"] = {
        "manifests": seed["images_done"], "blobs": seed["blobs"],
        "repositories": seed["repos"], "seed_s": seed["elapsed_s"],
        "seed_blobs_per_s": seed["blobs_per_s"],
        "garbage_manifests": deleted["deleted"], "manifest_deletes_per_s": deleted["deletes_per_s"],
        "mark": {"wall_s": round(mark["wall_s"], 3), "registry_s": registry_s(mark),
                 "said": mark["output"].strip()},
        "delete": {"wall_s": round(sweep["wall_s"], 3), "registry_s": registry_s(sweep),
                   "said": said, "blobs_deleted": blobs_deleted, "reclaimed": reclaimed,
                   "metric_blobs_deleted": int(float(metric[0])) if metric else None,
                   "at_least_expected": deleted["deleted"] * per_image},
        "pull_base": pulls(base) | {"p99_ms_rounds": base_rounds},
        "pull_during_delete": pulls(during) | {
            "gc_from_s": round(sweep["start"] - t0, 3), "gc_to_s": round(sweep["end"] - t0, 3)},
        "pull_during_dry_runs": d | {"p99_ms_rounds": [x["p99_ms"] for x in dry],
                                     "rounds": dry},
        "errors": errors,
    }
    b = s["gc"]["pull_base"]["p99_ms"]
    s["gc"]["p99_ratio_delete"] = during["pull"]["p99_ms"] / b if b else None
    s["gc"]["p99_ratio_dry_runs"] = d["p99_ms"] / b if b else None
if scan:
    def verdict(ok):
        return "pass" if ok else "miss"
    osv, image, imp = j("scan-osv"), j("scan-image"), j("scan-import")
    runs, warm = j("scan-runs"), j("scan-runs-warm")
    on_push = j("scan-on-push-RYS")
    errors = sum(j(n)["errors"] for n in [
        "scan-push-image-RYS", "scan-push-image-RYSP", "scan-on-push-RYS", "scan-on-push-RYSP",
        "scan-clean-RYS", "scan-clean-RYSP", "scan-clean-wait-RYS", "scan-clean-wait-RYSP",
        "scan-import", "scan-policy-import", "scan-rescan-import", "scan-runs", "scan-runs-warm",
        "scan-small", "scan-small-wait", "scan-rescan"])
    get = {}
    for img in ["image", "clean"]:
        off, e1, off_rounds = median_round(f"scan-get-{img}-RYS", lambda r: r["requests_per_s"])
        on, e2, on_rounds = median_round(f"scan-get-{img}-RYSP", lambda r: r["requests_per_s"])
        errors += e1 + e2
        ratio = on["requests_per_s"] / off["requests_per_s"] if off["requests_per_s"] else 0
        get[img] = {"policy_on_requests_per_s": on["requests_per_s"],
                    "policy_off_requests_per_s": off["requests_per_s"],
                    "policy_on_p99_ms": on["latency"]["p99_ms"],
                    "policy_off_p99_ms": off["latency"]["p99_ms"],
                    "ratio": ratio, "target": ">= 0.9x policy off", "verdict": verdict(ratio >= 0.9),
                    "policy_on_rounds": on_rounds, "policy_off_rounds": off_rounds}
    get["image"]["findings"] = runs["runs"][-1]["findings"]
    push = {}
    for srv in ["RYS", "RYSO"]:
        timed = [j(f"scan-push-{srv}-{r}") for r in range(1, rounds + 1)]
        primers = [j(f"scan-push-{srv}-{r}-primer") for r in range(1, rounds + 1)]
        errors += sum(x["errors"] for x in timed + primers)
        running, scan_cpu = 0, []
        hz = os.sysconf("SC_CLK_TCK")
        for r in range(1, rounds + 1):
            with open(os.path.join(out, f"scan-push-{srv}-{r}.scans")) as f:
                before, after, ticks = (float(x) for x in f.read().split())
            running += int(after < before + 1)
            scan_cpu.append(round(ticks / hz, 2))
        rates = sorted(x["mb_per_s"] for x in timed)
        manif = sorted(x["manifests"]["p50_ms"] for x in timed)
        push[srv] = {"mb_per_s": rates[len(rates) // 2], "mb_per_s_rounds": [x["mb_per_s"] for x in timed],
                     "elapsed_s_rounds": [x["elapsed_s"] for x in timed],
                     "manifest_put_ms": manif[len(manif) // 2],
                     "blob_bytes": timed[0]["blob_bytes"],
                     # CPU seconds of the scan thread during each timed push (the primer's
                     # scan), and in how many rounds that scan outlasted the push.
                     "scan_cpu_s_during_push": scan_cpu,
                     "primer_scan_outlasted_push": running if srv == "RYS" else None}
    for r in range(1, rounds + 1):
        errors += j(f"scan-push-wait-{r}")["errors"]
    push_ratio = push["RYS"]["mb_per_s"] / push["RYSO"]["mb_per_s"] if push["RYSO"]["mb_per_s"] else 0
    rescan = j("scan-rescan")
    scan_ok = runs["median_wall_s"] < 5
    mem_ok = runs["max_rss_delta_mib"] < 128
    rescan_ok = rescan.get("rescan_s", 1e9) < 10 and rescan.get("scans_finished_during", 1) == 0
    s["scan"] = {
        "records": osv["records"], "records_naming_image_packages": osv["naming_image_packages"],
        "records_per_ecosystem": osv["per_ecosystem"],
        "import": {"wall_s": imp["wall_s"], "records_per_s": imp["records_per_s"],
                   "others_wall_s": [j("scan-policy-import")["wall_s"],
                                     j("scan-rescan-import")["wall_s"]]},
        "image": {"compressed_mb": round(image["compressed_bytes"] / 1e6, 1),
                  "layers": len(image["layers"]), "files": sum(l["files"] for l in image["layers"]),
                  "packages": runs["runs"][-1]["packages"], "findings": runs["runs"][-1]["findings"],
                  "vulnerabilities": runs["runs"][-1]["vulnerabilities"]},
        "scan": {"median_wall_s": runs["median_wall_s"], "median_registry_s": runs["median_registry_s"],
                 "max_rss_delta_mib": runs["max_rss_delta_mib"],
                 "max_hwm_delta_mib": runs["max_hwm_delta_mib"], "runs": runs["runs"],
                 "warm_wall_s": warm["median_wall_s"], "on_push_registry_s": on_push["duration_s"],
                 "target": "< 5 s, < 128 MiB", "verdict_time": verdict(scan_ok),
                 "verdict_memory": verdict(mem_ok)},
        "push": {"on": push["RYS"], "off": push["RYSO"], "ratio": push_ratio,
                 "target": ">= 0.95x scan off", "verdict": verdict(push_ratio >= 0.95)},
        "get": get,
        "rescan": {"images": scan_rescan_images, "seconds": rescan.get("rescan_s"),
                   "rescans": rescan.get("rescans"),
                   "scans_during": rescan.get("scans_finished_during"),
                   "import_wall_s": rescan["wall_s"], "check": rescan.get("check"),
                   "target": "seconds (< 10 s), no layer read", "verdict": verdict(rescan_ok)},
        "errors": errors,
    }
json.dump(s, sys.stdout, indent=2)
PY

CPU=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
PEERS=
[ -n "$ONLY" ] || PEERS=", $(docker-registry --version 2>/dev/null | awk '{print "distribution " $3}'), $("$NGINX" -v 2>&1 | sed 's/.*\///; s/^/nginx /')"
echo
echo "$(nproc) cores ($CPU), $(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), \
Linux $(uname -r); ringyard $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$PEERS"
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
if "manifest_RY" in s:
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
if "s3" in s:
    x = s["s3"]
    pw, pc = x["pull_warm"], x["pull_cold"]
    row(f"S3+PG, 2 nodes: {sz['pull_clients']} pulls warm, p99 ms", f"{pw['p99_ms']:.1f}",
        f"1 node fs {pw['single_node_fs_p99_ms']:.1f}", "-", "-",
        ratio(pw["p99_ms"], pw["single_node_fs_p99_ms"]) + " of 1 node fs",
        "< 250 ms, <= 1.3x 1 node")
    reads = " / ".join(f"{b / pc['image_bytes']:.2f}" for b in pc["s3_read_bytes_per_node"])
    row(f"S3+PG, 2 nodes: {sz['pull_clients']} pulls cold, p99 ms", f"{pc['p99_ms']:.1f}", "-", "-",
        "-", f"image read from S3 {reads} times per node", "< 1 s, once per node")
    u = x["push"]
    row(f"S3 push {sz['push']} on s3s-fs: MB/s", f"{u['RYS1']:.0f}", "-", f"boto3 {u['boto3']:.0f}",
        "-", ratio(u["RYS1"], u["boto3"]) + " of boto3", ">= 0.5x boto3")
    row(f"S3 push {sz['push']} on moto: MB/s", f"{u['RYM']:.0f}", f"{u['DISTS']:.0f}",
        f"boto3 {u['boto3moto']:.0f}", ratio(u["RYM"], u["DISTS"]),
        ratio(u["RYM"], u["boto3moto"]) + " of boto3", ">= 3x dist")
    mm = x["manifest"]
    row("manifest GET, PostgreSQL engine: req/s", f"{mm['pg_requests_per_s']:.0f}",
        f"SQLite {mm['sqlite_requests_per_s']:.0f}", "-", "-",
        ratio(mm["pg_requests_per_s"], mm["sqlite_requests_per_s"]) + " of SQLite",
        ">= 0.5x SQLite")
    if "huge" in x:
        h = x["huge"]
        row(f"S3 {sz['huge']} push (node 1), pull (node 2): peak RSS MiB",
            " / ".join(f"{r:.1f}" for r in h["peak_rss_mib"]), "-", "-", "-",
            f"{h['push_mb_per_s']:.0f} / {h['pull_mb_per_s']:.0f} MB/s", "< 64 MiB + parts")
if "gc" in s:
    g = s["gc"]
    def secs(x):
        return f"{x:.2f}" if x is not None else "?"
    mk, dl = g["mark"], g["delete"]
    row(f"GC --dry-run (mark), {g['manifests']} manifests + {g['blobs']} blobs: s",
        secs(mk["wall_s"]), "-", "-", "-", f"registry's own time {secs(mk['registry_s'])} s", "")
    row(f"GC --delete, {g['garbage_manifests']} manifests deleted before: s", secs(dl["wall_s"]),
        "-", "-", "-",
        f"{dl['blobs_deleted']} blobs, {dl['reclaimed']}; registry's own {secs(dl['registry_s'])} s",
        "seconds")
    pb, pd, pr = g["pull_base"], g["pull_during_delete"], g["pull_during_dry_runs"]
    row(f"{sz['pull_clients']} clients pulling during GC --delete: p99 ms", f"{pd['p99_ms']:.1f}",
        f"no GC {pb['p99_ms']:.1f}", "-", "-",
        ratio(pd["p99_ms"], pb["p99_ms"]) + " of no GC", "<= 1.5x no GC")
    row("  overlap", f"{pd['pulls']} pulls", "-", "-", "-",
        f"GC {pd['gc_from_s']:.1f}-{pd['gc_to_s']:.1f} s of the {pd['elapsed_s']:.1f} s pull run", "")
    row(f"{sz['pull_clients']} clients pulling during GC dry runs: p99 ms", f"{pr['p99_ms']:.1f}",
        f"no GC {pb['p99_ms']:.1f}", "-", "-",
        ratio(pr["p99_ms"], pb["p99_ms"]) + " of no GC", "<= 1.5x no GC")
    row("  overlap", f"{pr['pulls']} pulls", "-", "-", "-",
        f"{pr['dry_runs']} dry runs of {pr['dry_run_median_s']:.2f} s over {pr['covered']:.0%} of "
        f"the {pr['elapsed_s']:.1f} s pull run", "")
    row("  pulls/s: no GC / GC --delete / dry runs",
        f"{pb['pulls_per_s']:.0f} / {pd['pulls_per_s']:.0f} / {pr['pulls_per_s']:.0f}",
        "-", "-", "-", "", "")
if "scan" in s:
    x = s["scan"]
    im, sc = x["image"], x["scan"]
    row(f"vulndb import, {x['records']} OSV records (zip): s", f"{x['import']['wall_s']:.2f}", "-",
        "-", "-", f"{x['import']['records_per_s']:.0f} records/s", "")
    row(f"scan of a {im['compressed_mb']:.0f} MB, {im['layers']}-layer image: s (median of 3)",
        f"{sc['median_wall_s']:.2f}", "-", "-", "-",
        f"registry's own {sc['median_registry_s']:.2f} s; on push {sc['on_push_registry_s']:.2f} s",
        f"< 5 s: {sc['verdict_time']}")
    row("  scanner peak memory (registry RSS - before): MiB", f"{sc['max_rss_delta_mib']:.1f}", "-",
        "-", "-", f"{im['packages']} packages, {im['findings']} findings", f"< 128 MiB: {sc['verdict_memory']}")
    p = x["push"]
    row(f"push {p['on']['blob_bytes'] / 2**20:.0f} MiB tar layer, scan on push: MB/s",
        f"{p['on']['mb_per_s']:.0f}", f"off {p['off']['mb_per_s']:.0f}", "-", "-",
        f"{p['ratio']:.2f}x of off", f">= 0.95x off: {p['verdict']}")
    cpu = sorted(p["on"]["scan_cpu_s_during_push"])
    row("  beside it", f"{cpu[len(cpu) // 2]:.1f} CPU s", "-", "-", "-",
        f"of the previous push's scan (median); config + manifest PUT "
        f"{p['on']['manifest_put_ms']:.1f} / {p['off']['manifest_put_ms']:.1f} ms", "")
    for img, what in [("image", f"the scanned image ({x['get']['image']['findings']} findings)"),
                      ("clean", "a clean image")]:
        g = x["get"][img]
        row(f"manifest GET, policy on, 64 conns, {what}: req/s", f"{g['policy_on_requests_per_s']:.0f}",
            f"off {g['policy_off_requests_per_s']:.0f}", "-", "-", f"{g['ratio']:.2f}x of off",
            f">= 0.9x off: {g['verdict']}")
    r = x["rescan"]
    secs = f"{r['seconds']:.2f}" if r["seconds"] is not None else "?"
    row(f"rescan of {r['images']} stored images after an import: s", secs, "-", "-", "-",
        f"{r['rescans']:.0f} results re-evaluated, {r['scans_during']:.0f} scans ran",
        f"seconds, no layer read: {r['verdict']}")
head = ("workload", "ringyard", "distribution", "nginx", "ry/dist", "ry/nginx", "target")
w = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
def line(r):
    return "| " + " | ".join(str(c).ljust(w[i]) for i, c in enumerate(r)) + " |"
print(line(head))
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in rows:
    print(line(r))
errors = sum(v.get("errors", 0) for k, v in s.items() if isinstance(v, dict))
errors += sum(v.get("errors", 0) for v in s.get("s3", {}).values() if isinstance(v, dict))
print(f"\nerrors across all runs: {errors}")
sys.exit(1 if errors else 0)
PY
say "figures: $OUT (summary.json)"
