#!/usr/bin/env python3
"""The scanning workload's fixtures and measurements, for loadtest/compare.sh (standard library
only). Everything is generated at run time from fixed seeds, so two runs build the same bytes.

Subcommands (each prints one JSON object on stdout):
  osv OUT.zip --records N
      N OSV records as an osv.dev all.zip: ecosystems Debian:12, PyPI, npm, Go, crates.io;
      ECOSYSTEM and SEMVER ranges (introduced/fixed, some last_affected), CVSS_V3 vectors,
      aliases. HIT_SHARE of them name a package the big image has (a tenth of those affecting
      its version; never critical, so that a policy blocking critical findings lets it be
      pulled), the rest name packages no image here has.
  osv-rescan OUT.zip --base BASE.zip
      BASE's records plus one per package of the small images' pool, each affecting the
      version they have: the data set that changes every small image's result.
  image DIR --mb M --layers L
      The big image, written to DIR: L gzip tar layers of about M/L MB each (compressed);
      layer 1 a Debian 12 base (os-release, a dpkg status of DPKG_PACKAGES packages with
      Source: lines, docs, executables), the others Python dist-info METADATA files, npm
      package.json files, a Cargo.lock, and filler files of incompressible bytes; a config
      and an OCI manifest.
  push-image --registry URL --repo R --tag T DIR
      Pushes what `image` wrote (monolithic POST ?digest= per blob, then the manifest).
  small-images --registry URL --repo R --count N [--first I] [--clients C]
      N small distinct images (one gzip layer: os-release and a dpkg status of a few packages
      of the rescan pool, plus a file naming the image), pushed in repositories R-0..R-9.
  scan-runs --registry URL --pid PID --repo R --ref T --runs K [--evict ROOT]
      K times: (the image's blobs dropped from the page cache,) POST .../scan, then /metrics
      every 20 ms until a scan has finished; the registry's VmRSS sampled every 10 ms from
      just before the POST to the end (VmHWM reset first, when allowed, as a cross-check).
      Wall time, the registry's own scan seconds, memory deltas, what the scan found.
  wait-scans --registry URL --finished N [--timeout S]
      Until the registry has finished N scans (completed + failed) since it started; a
      failed scan counts as an error. scans-finished --registry URL: how many so far.
  import --ringyard BIN --root DIR --data ZIP [--rescans-of N --registry URL [--check R:T]]
      `ringyard vulndb import`, timed; with --rescans-of: then /metrics every 50 ms until
      ringyard_scan_rescans_total has grown by N, timed from the import's end (and how many
      scans ran meanwhile: none should, a rescan reads no layer); --check: that image's
      result must now have findings.
"""

import argparse
import gzip
import hashlib
import http.client
import io
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse
import urllib.request
import zipfile

# Shares of the records per ecosystem (name, range type).
ECOSYSTEMS = [("Debian:12", 0.30), ("PyPI", 0.20), ("npm", 0.25), ("Go", 0.15), ("crates.io", 0.10)]
# Of all records, the share that name a package of the big image (Go: none, the image has no
# Go binary).
HIT_SHARE = 0.10
DPKG_PACKAGES = 400
PYTHON_PACKAGES = 200
NPM_PACKAGES = 1000
CRATES = 60
RESCAN_POOL = 50
MTIME = 1_700_000_000  # every tar entry, zip entry and timestamp: fixed
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

CVSS = {
    "critical": ["CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"],
    "high": ["CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",
             "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H",
             "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H"],
    "medium": ["CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N",
               "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N",
               "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N"],
    "low": ["CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:L/I:N/A:N",
            "CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:N/I:N/A:L"],
}
WORDS = ("a an the of in to when via crafted input remote attacker may cause denial service "
         "buffer overflow heap use after free out bounds read write integer parsing request "
         "header certificate validation bypass allows execution arbitrary code memory leak "
         "null pointer dereference infinite loop regular expression path traversal").split()
REAL_DEBIAN = ("openssl glibc zlib curl systemd openssh bash coreutils tar gzip xz-utils "
               "libxml2 sqlite3 perl python3.11 expat krb5 gnutls28 libgcrypt20 ncurses "
               "pcre2 shadow util-linux apt dpkg libtasn1-6 p11-kit nghttp2 libssh2 "
               "libzstd lz4 bzip2 e2fsprogs libcap2 libseccomp gmp nettle libidn2 "
               "libunistring openldap cyrus-sasl2 libpsl keyutils").split()


# --- the packages the images have ---------------------------------------------------------------

def version3(rng):
    return (rng.randint(1, 9), rng.randint(0, 30), rng.randint(0, 40))


def dpkg_packages():
    """The base layer's dpkg packages: (binary, source or None, version tuple, revision)."""
    rng = random.Random(11)
    sources = REAL_DEBIAN + [f"debsrc{k:03d}" for k in range(150 - len(REAL_DEBIAN))]
    # The binaries of one source share its version, as Debian builds them.
    versions = {src: (version3(rng), rng.randint(1, 9)) for src in sources}
    out = []
    for k in range(DPKG_PACKAGES):
        src = sources[k % len(sources)]
        nth = k // len(sources)
        binary = src if nth == 0 else f"lib{src}-{nth}"
        out.append((binary, src if binary != src else None, *versions[src]))
    return out


def dpkg_sources():
    """(source, version text) of the dpkg packages, as advisories name them."""
    seen = {}
    for binary, src, v, rev in dpkg_packages():
        seen.setdefault(src or binary, (v, rev))
    return sorted(seen.items())


def dpkg_version(v, rev):
    return f"{v[0]}.{v[1]}.{v[2]}-{rev}"


def python_packages():
    rng = random.Random(12)
    out = []
    for k in range(PYTHON_PACKAGES):
        # Mixed case and separators: matching must normalize (PEP 503).
        name = ["Py_Pkg", "py-pkg", "PY.pkg", "pyPkg"][k % 4] + f"-{k:03d}"
        out.append((name, version3(rng)))
    return out


def pep503(name):
    out, sep = [], False
    for c in name:
        if c in "-_.":
            if not sep:
                out.append("-")
            sep = True
        else:
            out.append(c.lower())
            sep = False
    return "".join(out)


def npm_packages():
    rng = random.Random(13)
    out = []
    for k in range(NPM_PACKAGES):
        name = f"@scope{k % 20:02d}/npm-pkg-{k:04d}" if k % 5 == 0 else f"npm-pkg-{k:04d}"
        out.append((name, version3(rng)))
    return out


def crates():
    rng = random.Random(14)
    return [(f"crate-{k:03d}", version3(rng)) for k in range(CRATES)]


def rescan_pool():
    rng = random.Random(15)
    return [(f"rescan-src-{k:03d}", version3(rng), rng.randint(1, 5)) for k in range(RESCAN_POOL)]


def vtext(v):
    return f"{v[0]}.{v[1]}.{v[2]}"


# --- OSV records --------------------------------------------------------------------------------

GHSA_CHARS = "23456789cfghjmpqrvwx"


def ghsa(n):
    rng = random.Random(n * 7919 + 1)
    return "GHSA-" + "-".join("".join(rng.choice(GHSA_CHARS) for _ in range(4)) for _ in range(3))


def record_id(eco, i):
    year = 2018 + i % 7
    return {
        "Debian:12": f"DEBIAN-CVE-{year}-{100000 + i}",
        "PyPI": f"PYSEC-{year}-{100000 + i}" if i % 2 else ghsa(i),
        "npm": ghsa(i),
        "Go": f"GO-{year}-{100000 + i}",
        "crates.io": f"RUSTSEC-{year}-{100000 + i}",
    }[eco]


def text(rng, words):
    return " ".join(rng.choices(WORDS, k=words))


def ranges_for(rng, eco, installed, dpkg_rev=None):
    """Ranges (and a versions list) for a package installed at `installed` (a tuple, or None
    for a package no image has): most leave the installed version alone, some affect it."""
    kind = "ECOSYSTEM" if eco in ("Debian:12", "PyPI") else "SEMVER"
    if installed is None:
        installed = version3(rng)
    fmt = (lambda v, r=1: f"{vtext(v)}-{r}") if eco == "Debian:12" else (lambda v, r=None: vtext(v))
    rev = dpkg_rev or 1
    lower = (installed[0] - 1, installed[1], installed[2])
    higher = (installed[0], installed[1], installed[2] + 1)
    u = rng.random()
    if u < 0.08:  # affected: fixed above the installed version
        events = [{"introduced": "0"}, {"fixed": fmt(higher, rev)}]
    elif u < 0.10:  # affected: last_affected is the installed version
        events = [{"introduced": fmt(lower, 1)}, {"last_affected": fmt(installed, rev)}]
    elif u < 0.15:  # not affected: last_affected below it
        events = [{"introduced": "0"}, {"last_affected": fmt(lower, 1)}]
    elif u < 0.80:  # not affected: fixed at or below it
        events = [{"introduced": "0"}, {"fixed": fmt(lower, 1)}]
    else:  # not affected: introduced after it
        events = [{"introduced": fmt((installed[0] + 1, 0, 0), 1)},
                  {"fixed": fmt((installed[0] + 1, 2, 0), 1)}]
    affected = {"ranges": [{"type": kind, "events": events}]}
    if eco == "PyPI":
        # PyPI's records also list the affected versions one by one.
        affected["versions"] = [f"{installed[0] - 1}.{m}.{p}" for m in range(3) for p in range(3)]
    return affected


def record(i, eco, name, installed, rng, hit, dpkg_rev=None, severity=None):
    rid = record_id(eco, i)
    if severity is None:
        levels = ["high", "medium", "low"] if hit else ["critical", "high", "medium", "low"]
        severity = rng.choice(levels)
    affected = {"package": {"ecosystem": eco, "name": name}}
    if eco == "npm":
        affected["package"]["purl"] = f"pkg:npm/{name.replace('@', '%40')}"
    affected.update(ranges_for(rng, eco, installed, dpkg_rev))
    if eco == "Debian:12":
        affected["ecosystem_specific"] = {"urgency": rng.choice(["low", "medium", "not yet assigned"])}
    rec = {
        "schema_version": "1.6.0",
        "id": rid,
        "modified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(MTIME - i * 97)),
        "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(MTIME - i * 131 - 86400)),
        "aliases": [f"CVE-{2018 + i % 7}-{10000 + i}"],
        "summary": text(rng, 8),
        "details": text(rng, rng.randint(40, 120)),
        "affected": [affected],
        "references": [{"type": "ADVISORY", "url": f"https://example.invalid/advisory/{rid}"}],
    }
    if eco == "Debian:12":
        rec["upstream"] = rec.pop("aliases")
        if rng.random() < 0.3:  # many Debian records carry no score
            return rec
    rec["severity"] = [{"type": "CVSS_V3", "score": rng.choice(CVSS[severity])}]
    return rec


def image_targets():
    """Per ecosystem, what the big image has: (name as advisories write it, version, revision)."""
    rng = random.Random(16)
    py = []
    for name, v in python_packages():
        # Advisories name PyPI packages in their own spelling; normalization must match them.
        py.append((rng.choice([name, pep503(name), name.upper()]), v, None))
    return {
        "Debian:12": [(src, v, rev) for src, (v, rev) in dpkg_sources()],
        "PyPI": py,
        "npm": [(n, v, None) for n, v in npm_packages()],
        "crates.io": [(n, v, None) for n, v in crates()],
    }


def cmd_osv(a):
    rng = random.Random(21)
    targets = image_targets()
    hit_ecos = [e for e, _ in ECOSYSTEMS if e in targets]
    counts = {e: 0 for e, _ in ECOSYSTEMS}
    hits = 0
    t0 = time.monotonic()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with zipfile.ZipFile(a.out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        def put(rec):
            info = zipfile.ZipInfo(rec["id"] + ".json", date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, json.dumps(rec), compresslevel=1)
        for i in range(a.records):
            if rng.random() < HIT_SHARE:
                eco = rng.choice(hit_ecos)
                name, v, rev = rng.choice(targets[eco])
                rec = record(i, eco, name, v, rng, True, rev)
                hits += 1
            else:
                u, acc = rng.random(), 0.0
                for eco, share in ECOSYSTEMS:
                    acc += share
                    if u < acc:
                        break
                k = rng.randrange(20000)
                name = {
                    "Debian:12": f"other-src-{k}",
                    "PyPI": f"other-py-{k}",
                    "npm": f"other-npm-{k}",
                    "Go": f"github.com/other{k % 500}/mod{k}",
                    "crates.io": f"other-crate-{k}",
                }[eco]
                rec = record(i, eco, name, None, rng, False)
            counts[eco] += 1
            put(rec)
    json.dump({"path": a.out, "records": a.records, "naming_image_packages": hits,
               "per_ecosystem": counts, "bytes": os.path.getsize(a.out),
               "generated_s": round(time.monotonic() - t0, 3)}, sys.stdout)


def cmd_osv_rescan(a):
    t0 = time.monotonic()
    rng = random.Random(22)
    shutil.copyfile(a.base, a.out)
    with zipfile.ZipFile(a.out, "a", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        base = len(z.namelist())
        for j, (name, v, rev) in enumerate(rescan_pool()):
            rec = record(base + j, "Debian:12", name, v, rng, True, rev, severity="high")
            # Affects the version the small images have.
            rec["affected"][0]["ranges"] = [{"type": "ECOSYSTEM", "events": [
                {"introduced": "0"}, {"fixed": f"{vtext((v[0], v[1], v[2] + 1))}-{rev}"}]}]
            info = zipfile.ZipInfo(rec["id"] + ".json", date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, json.dumps(rec), compresslevel=1)
    json.dump({"path": a.out, "records": base + RESCAN_POOL, "added": RESCAN_POOL,
               "bytes": os.path.getsize(a.out), "generated_s": round(time.monotonic() - t0, 3)},
              sys.stdout)


# --- the big image ----------------------------------------------------------------------------

def tar_add(tar, path, data, mode=0o644):
    info = tarfile.TarInfo(path)
    info.size = len(data)
    info.mode = mode
    info.mtime = MTIME
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def tar_dir(tar, path):
    info = tarfile.TarInfo(path)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = MTIME
    tar.addfile(info)


def dpkg_status():
    rng = random.Random(31)
    out = []
    for binary, src, v, rev in dpkg_packages():
        stanza = [f"Package: {binary}", "Status: install ok installed", "Priority: optional",
                  "Section: libs", f"Installed-Size: {rng.randint(10, 20000)}",
                  "Maintainer: Debian Maintainers <debian@example.invalid>",
                  "Architecture: amd64"]
        if src:
            stanza.append(f"Source: {src}")
        stanza += [f"Version: {dpkg_version(v, rev)}", "Depends: libc6 (>= 2.34)",
                   f"Description: {text(rng, 6)}"]
        stanza += [" " + text(rng, 12) for _ in range(rng.randint(1, 5))]
        out.append("\n".join(stanza))
    return ("\n\n".join(out) + "\n").encode()


def python_metadata(name, v, rng):
    return (f"Metadata-Version: 2.1\nName: {name}\nVersion: {vtext(v)}\nSummary: {text(rng, 6)}\n"
            f"License: MIT\nRequires-Python: >=3.8\n\n{text(rng, 200)}\n").encode()


class Filler:
    """Incompressible bytes, deterministic per layer."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def take(self, n):
        return self.rng.randbytes(n)


def build_layer(args):
    """One gzip tar layer of about `target` compressed bytes; returns its file's facts."""
    index, target, path = args
    rng = random.Random(100 + index)
    filler = Filler(200 + index)
    hasher = hashlib.sha256()  # of the uncompressed tar: the diff_id

    class Tee:
        def __init__(self, gz):
            self.gz = gz

        def write(self, b):
            hasher.update(b)
            return self.gz.write(b)

    with open(path, "wb") as raw:
        gz = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=MTIME)
        tar = tarfile.open(fileobj=Tee(gz), mode="w|", format=tarfile.PAX_FORMAT)
        files = 0
        if index == 0:
            tar_add(tar, "etc/os-release", b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
                    b'NAME="Debian GNU/Linux"\nVERSION_ID="12"\nVERSION="12 (bookworm)"\n'
                    b'VERSION_CODENAME=bookworm\nID=debian\n')
            tar_add(tar, "var/lib/dpkg/status", dpkg_status())
            for binary, _, _, _ in dpkg_packages():
                tar_add(tar, f"usr/share/doc/{binary}/copyright", text(rng, 80).encode())
            # Executables (scripts: not ELF, so read only as far as their first bytes).
            for k in range(200):
                tar_add(tar, f"usr/bin/tool{k:03d}", b"#!/bin/sh\n" + text(rng, 50).encode(), 0o755)
            files += 2 + DPKG_PACKAGES + 200
        else:
            # Each of the other layers a share of the Python and npm packages.
            others = 4
            share = index - 1
            for k, (name, v) in enumerate(python_packages()):
                if k % others == share:
                    d = f"usr/local/lib/python3.11/site-packages/{name}-{vtext(v)}.dist-info"
                    tar_add(tar, f"{d}/METADATA", python_metadata(name, v, rng))
                    tar_add(tar, f"{d}/RECORD", text(rng, 30).encode())
                    files += 2
            for k, (name, v) in enumerate(npm_packages()):
                if k % others == share:
                    body = json.dumps({"name": name, "version": vtext(v), "description": text(rng, 8),
                                       "main": "index.js", "license": "MIT",
                                       "dependencies": {"dep-a": "^1.0.0"}}, indent=2)
                    tar_add(tar, f"app/node_modules/{name}/package.json", body.encode())
                    tar_add(tar, f"app/node_modules/{name}/index.js",
                            f"module.exports = {{}}; // {text(rng, 20)}\n".encode())
                    files += 2
            if index == 4:
                lock = ["version = 3", ""]
                for name, v in crates():
                    lock += ["[[package]]", f'name = "{name}"', f'version = "{vtext(v)}"',
                             'source = "registry+https://github.com/rust-lang/crates.io-index"',
                             f'checksum = "{hashlib.sha256(name.encode()).hexdigest()}"', ""]
                tar_add(tar, "app/Cargo.lock", "\n".join(lock).encode())
                files += 1
        # Filler until the compressed layer reaches its size (incompressible: compressed is
        # about uncompressed).
        k = 0
        while raw.tell() < target:
            size = rng.choice([16 << 10, 64 << 10, 256 << 10, 1 << 20, 2 << 20])
            size = min(size, max(4096, target - raw.tell()))
            tar_add(tar, f"opt/data/layer{index}/blob{k:05d}.bin", filler.take(size))
            files += 1
            k += 1
        tar.close()
        gz.close()
    whole = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            whole.update(piece)
    digest = "sha256:" + whole.hexdigest()
    return {"path": path, "digest": digest, "size": os.path.getsize(path),
            "diff_id": "sha256:" + hasher.hexdigest(), "files": files}


def cmd_image(a):
    t0 = time.monotonic()
    os.makedirs(a.dir, exist_ok=True)
    target = int(a.mb * 1e6 / a.layers)
    jobs = [(i, target, os.path.join(a.dir, f"layer{i}.tar.gz")) for i in range(a.layers)]
    with multiprocessing.Pool(min(2, os.cpu_count() or 1)) as pool:
        layers = pool.map(build_layer, jobs)
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
        "history": [{"created_by": f"scan_bench layer {i}"} for i in range(len(layers))],
    }, sort_keys=True).encode()
    with open(os.path.join(a.dir, "config.json"), "wb") as f:
        f.write(config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                   "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": l["digest"], "size": l["size"]}
                   for l in layers],
    }, sort_keys=True).encode()
    with open(os.path.join(a.dir, "manifest.json"), "wb") as f:
        f.write(manifest)
    facts = {"manifest_digest": "sha256:" + hashlib.sha256(manifest).hexdigest(),
             "layers": layers, "compressed_bytes": sum(l["size"] for l in layers),
             "dpkg_packages": DPKG_PACKAGES, "python_packages": PYTHON_PACKAGES,
             "npm_packages": NPM_PACKAGES, "crates": CRATES,
             "generated_s": round(time.monotonic() - t0, 3)}
    with open(os.path.join(a.dir, "image.json"), "w") as f:
        json.dump(facts, f)
    json.dump(facts, sys.stdout)


# --- pushing ------------------------------------------------------------------------------------

class Client:
    """One keep-alive HTTP/1.1 connection to the registry."""

    def __init__(self, url, timeout=300):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.timeout = u.hostname, u.port, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                data = r.read()
                return r.status, r, data
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt or hasattr(body, "read"):
                    raise
        raise RuntimeError("unreachable")

    def blob(self, repo, digest, body, size):
        status, _, data = self.request(
            "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", body,
            {"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        if status != 201:
            raise RuntimeError(f"blob upload {digest}: {status} {data[:200]!r}")

    def manifest(self, repo, ref, body):
        status, r, data = self.request("PUT", f"/v2/{repo}/manifests/{ref}", body,
                                       {"Content-Type": OCI_MANIFEST})
        if status != 201:
            raise RuntimeError(f"manifest {repo}:{ref}: {status} {data[:200]!r}")
        return r.getheader("Docker-Content-Digest")


def cmd_push_image(a):
    with open(os.path.join(a.dir, "image.json")) as f:
        facts = json.load(f)
    c = Client(a.registry)
    t0 = time.monotonic()
    for l in facts["layers"]:
        with open(l["path"], "rb") as body:
            c.blob(a.repo, l["digest"], body, l["size"])
    with open(os.path.join(a.dir, "config.json"), "rb") as f:
        config = f.read()
    c.blob(a.repo, "sha256:" + hashlib.sha256(config).hexdigest(), config, len(config))
    with open(os.path.join(a.dir, "manifest.json"), "rb") as f:
        digest = c.manifest(a.repo, a.tag, f.read())
    elapsed = time.monotonic() - t0
    if digest != facts["manifest_digest"]:
        raise SystemExit(f"the registry stored {digest}, we sent {facts['manifest_digest']}")
    json.dump({"manifest_digest": digest, "elapsed_s": round(elapsed, 3),
               "mb_per_s": round(facts["compressed_bytes"] / elapsed / 1e6, 1), "errors": 0},
              sys.stdout)


def small_image(i):
    """Image i of the small set: its layer, config and manifest bytes."""
    pool = rescan_pool()
    picked = [pool[(i * 7 + j * 13) % len(pool)] for j in range(4)]
    status = []
    for name, v, rev in picked:
        status.append(f"Package: {name}\nStatus: install ok installed\nArchitecture: amd64\n"
                      f"Version: {dpkg_version(v, rev)}\nDescription: package {name}\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar_add(tar, "etc/os-release", b'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian 12"\n')
        tar_add(tar, "var/lib/dpkg/status", "\n".join(status).encode())
        tar_add(tar, "etc/image-name", f"small image {i}\n".encode())
    raw = buf.getvalue()
    layer = gzip.compress(raw, compresslevel=6, mtime=MTIME)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}},
                        sort_keys=True).encode()
    d = lambda b: "sha256:" + hashlib.sha256(b).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": d(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": d(layer), "size": len(layer)}],
    }, sort_keys=True).encode()
    return (layer, d(layer)), (config, d(config)), manifest


def cmd_small_images(a):
    todo = list(range(a.first, a.first + a.count))
    lock = threading.Lock()
    errors = []
    done = [0]
    digests = {}

    def worker():
        c = Client(a.registry, timeout=60)
        while True:
            with lock:
                if not todo or len(errors) > 10:
                    return
                i = todo.pop()
            try:
                (layer, ld), (config, cd), manifest = small_image(i)
                repo = f"{a.repo}-{i % 10}"
                c.blob(repo, ld, layer, len(layer))
                c.blob(repo, cd, config, len(config))
                digest = c.manifest(repo, f"v{i}", manifest)
                with lock:
                    done[0] += 1
                    digests[i] = digest
            except Exception as e:  # counted, and the run goes on
                with lock:
                    errors.append(f"image {i}: {e}")

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    for e in errors[:5]:
        print(e, file=sys.stderr)
    first = digests.get(a.first)
    json.dump({"images": done[0], "elapsed_s": round(elapsed, 3),
               "images_per_s": round(done[0] / elapsed, 1),
               "first": {"image": f"{a.repo}-{a.first % 10}:v{a.first}", "digest": first},
               "errors": len(errors)}, sys.stdout)


# --- measuring ----------------------------------------------------------------------------------

def metrics(registry):
    text_ = urllib.request.urlopen(registry + "/metrics", timeout=10).read().decode()
    out = {}
    for line in text_.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def finished(m):
    return (m.get('ringyard_scans_total{outcome="completed"}', 0)
            + m.get('ringyard_scans_total{outcome="failed"}', 0))


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Sampler(threading.Thread):
    """The process's VmRSS every `interval` seconds until stopped: the peak."""

    def __init__(self, pid, interval):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak, self.samples = 0, 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            self.samples += 1
            self.halt.wait(self.interval)
        self.peak = max(self.peak, rss_kib(self.pid))


def evict(root, registry, repo, ref):
    """Drops the image's blobs from the page cache (a scan on push reads blobs that were never
    in it: ringyard writes them with O_DIRECT). Returns how many files were evicted."""
    req = urllib.request.Request(f"{registry}/v2/{repo}/manifests/{ref}",
                                 headers={"Accept": OCI_MANIFEST})
    m = json.load(urllib.request.urlopen(req, timeout=30))
    n = 0
    for d in [m["config"]["digest"]] + [l["digest"] for l in m.get("layers", [])]:
        hexd = d.split(":", 1)[1]
        fd = os.open(os.path.join(root, "blobs", "sha256", hexd[:2], hexd), os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        finally:
            os.close(fd)
    return n


def cmd_scan_runs(a):
    runs = []
    errors = 0
    url = f"{a.registry}/v2/{a.repo}/manifests/{a.ref}/scan"
    for n in range(a.runs):
        evicted = evict(a.evict, a.registry, a.repo, a.ref) if a.evict else 0
        before = metrics(a.registry)
        try:  # VmHWM from the current RSS on (Linux 4.0+), a cross-check of the sampling
            with open(f"/proc/{a.pid}/clear_refs", "w") as f:
                f.write("5")
            hwm_reset = True
        except OSError:
            hwm_reset = False
        base = rss_kib(a.pid)
        sampler = Sampler(a.pid, a.interval)
        sampler.start()
        t0 = time.monotonic()
        req = urllib.request.Request(url, method="POST")
        with urllib.request.urlopen(req, timeout=30) as r:
            if r.status != 202:
                raise SystemExit(f"POST {url}: {r.status}")
        deadline = t0 + a.timeout
        while True:
            m = metrics(a.registry)
            if finished(m) > finished(before):
                break
            if time.monotonic() > deadline:
                errors += 1
                break
            time.sleep(0.02)
        wall = time.monotonic() - t0
        sampler.halt.set()
        sampler.join()
        hwm = rss_kib(a.pid, "VmHWM") if hwm_reset else None
        doc = json.load(urllib.request.urlopen(url, timeout=30))
        failed = m.get('ringyard_scans_total{outcome="failed"}', 0) > before.get(
            'ringyard_scans_total{outcome="failed"}', 0)
        if failed or doc.get("status") != "completed":
            errors += 1
            print(f"scan run {n + 1}: {doc.get('status')} {doc.get('error', '')}", file=sys.stderr)
        runs.append({
            "wall_s": round(wall, 3),
            "registry_s": round(m.get("ringyard_scan_duration_seconds_total", 0)
                                - before.get("ringyard_scan_duration_seconds_total", 0), 3),
            "rss_base_mib": round(base / 1024, 1),
            "rss_peak_mib": round(sampler.peak / 1024, 1),
            "rss_delta_mib": round((sampler.peak - base) / 1024, 1),
            "hwm_delta_mib": round((hwm - base) / 1024, 1) if hwm else None,
            "samples": sampler.samples,
            "blobs_evicted": evicted,
            "status": doc.get("status"),
            "vulnerabilities": doc.get("vulnerabilities"),
            "findings": len(doc.get("details", [])),
            "packages": sum(p.get("packages", 0) for p in doc.get("platforms", [])),
        })
    walls = sorted(r["wall_s"] for r in runs)
    own = sorted(r["registry_s"] for r in runs)
    json.dump({"runs": runs, "median_wall_s": walls[len(walls) // 2],
               "median_registry_s": own[len(own) // 2],
               "max_rss_delta_mib": max(r["rss_delta_mib"] for r in runs),
               "max_hwm_delta_mib": max((r["hwm_delta_mib"] or 0) for r in runs),
               "sample_interval_s": a.interval, "errors": errors}, sys.stdout)


def cmd_wait_scans(a):
    """Waits for N finished scans; a failed one is an error (nothing here should fail)."""
    t0 = time.monotonic()
    errors = 0
    while True:
        m = metrics(a.registry)
        if finished(m) >= a.finished:
            break
        if time.monotonic() - t0 > a.timeout:
            print(f"only {finished(m):.0f} of {a.finished} scans finished in {a.timeout} s",
                  file=sys.stderr)
            errors += 1
            break
        time.sleep(0.05)
    failed = m.get('ringyard_scans_total{outcome="failed"}', 0)
    if failed:
        print(f"{failed:.0f} scans failed", file=sys.stderr)
    json.dump({"finished": finished(m), "failed": failed,
               "duration_s": m.get("ringyard_scan_duration_seconds_total", 0),
               "waited_s": round(time.monotonic() - t0, 3), "errors": errors + int(failed)},
              sys.stdout)


def cmd_scans_finished(a):
    m = metrics(a.registry)
    json.dump({"finished": finished(m),
               "duration_s": m.get("ringyard_scan_duration_seconds_total", 0)}, sys.stdout)


def cmd_import(a):
    before = metrics(a.registry) if a.rescans_of else {}
    t0 = time.monotonic()
    p = subprocess.run([a.ringyard, "vulndb", "import", a.data, "--root", a.root],
                       capture_output=True, text=True, timeout=a.timeout)
    t1 = time.monotonic()
    out = {"wall_s": round(t1 - t0, 3), "exit": p.returncode,
           "output": (p.stdout + p.stderr).strip()[-2000:], "errors": int(p.returncode != 0)}
    with zipfile.ZipFile(a.data) as z:
        out["records"] = len(z.namelist())
    out["records_per_s"] = round(out["records"] / out["wall_s"], 1)
    if p.returncode != 0:
        print(out["output"], file=sys.stderr)
    if a.rescans_of and p.returncode == 0:
        key = "ringyard_scan_rescans_total"
        while True:
            m = metrics(a.registry)
            grown = m.get(key, 0) - before.get(key, 0)
            if grown >= a.rescans_of:
                break
            if time.monotonic() - t1 > a.timeout:
                out["errors"] += 1
                print(f"rescans grew by {grown:.0f} of {a.rescans_of} in {a.timeout} s",
                      file=sys.stderr)
                break
            time.sleep(0.05)
        out["rescan_s"] = round(time.monotonic() - t1, 3)
        out["rescans"] = grown
        out["scans_finished_during"] = finished(m) - finished(before)
        if a.check:
            # One image of the set: its result changed (findings now) without a new scan.
            repo, ref = a.check.rsplit(":", 1)
            doc = json.load(urllib.request.urlopen(
                f"{a.registry}/v2/{repo}/manifests/{ref}/scan", timeout=30))
            out["check"] = {"image": a.check, "status": doc.get("status"),
                            "findings": len(doc.get("details", []))}
            if doc.get("status") != "completed" or not doc.get("details"):
                out["errors"] += 1
                print(f"after the rescan {a.check} has {out['check']}", file=sys.stderr)
    json.dump(out, sys.stdout)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("osv")
    s.add_argument("out")
    s.add_argument("--records", type=int, required=True)
    s = sub.add_parser("osv-rescan")
    s.add_argument("out")
    s.add_argument("--base", required=True)
    s = sub.add_parser("image")
    s.add_argument("dir")
    s.add_argument("--mb", type=float, required=True)
    s.add_argument("--layers", type=int, default=5)
    s = sub.add_parser("push-image")
    s.add_argument("dir")
    s.add_argument("--registry", required=True)
    s.add_argument("--repo", required=True)
    s.add_argument("--tag", required=True)
    s = sub.add_parser("small-images")
    s.add_argument("--registry", required=True)
    s.add_argument("--repo", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--first", type=int, default=0)
    s.add_argument("--clients", type=int, default=4)
    s = sub.add_parser("scan-runs")
    s.add_argument("--registry", required=True)
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--repo", required=True)
    s.add_argument("--ref", required=True)
    s.add_argument("--runs", type=int, default=3)
    s.add_argument("--interval", type=float, default=0.01)
    s.add_argument("--timeout", type=float, default=300)
    s.add_argument("--evict", metavar="ROOT",
                   help="the registry's root: its blobs of the image leave the page cache first")
    s = sub.add_parser("wait-scans")
    s.add_argument("--registry", required=True)
    s.add_argument("--finished", type=int, required=True)
    s.add_argument("--timeout", type=float, default=300)
    s = sub.add_parser("scans-finished")
    s.add_argument("--registry", required=True)
    s = sub.add_parser("import")
    s.add_argument("--ringyard", required=True)
    s.add_argument("--root", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--registry")
    s.add_argument("--rescans-of", type=int, default=0)
    s.add_argument("--check", help="REPO:TAG whose result must have findings after the rescan")
    s.add_argument("--timeout", type=float, default=900)
    a = p.parse_args()
    {"osv": cmd_osv, "osv-rescan": cmd_osv_rescan, "image": cmd_image, "push-image": cmd_push_image,
     "small-images": cmd_small_images, "scan-runs": cmd_scan_runs,
     "wait-scans": cmd_wait_scans, "scans-finished": cmd_scans_finished, "import": cmd_import}[a.cmd](a)


if __name__ == "__main__":
    main()
