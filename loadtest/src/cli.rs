//! Command line: subcommands, flags, and the value parsers (sizes, image references). The
//! parsers are pure and unit-tested.

use clap::{Args, Parser, Subcommand, ValueEnum};

const JSON_DOC: &str = "\
With --json every run prints exactly one JSON object on stdout (human-readable text otherwise).
Rates: mb_per_s is 10^6 bytes per second. Latency objects have the fields
  {count, errors, p50_ms, p90_ms, p99_ms, max_ms, mean_ms}
where count is successful operations and the quantiles cover successes only.
Fields per workload:
  pull: workload, registry, image, clients, threads, pulls_requested (null: unbounded),
        duration_s, stop_file, verify, elapsed_s,
        pulls_done, requests (HTTP requests), requests_per_s, bytes (body bytes received),
        mb_per_s, image_bytes (manifests + config + layers of one pull), layers, connects,
        errors, error_kinds{connect,timeout,io,protocol,status,digest,size,not_run},
        pull{latency}, phases{manifest{latency}, config{latency}, layers{latency}}
  push: workload, registry, repo, mode, chunk_bytes, size_bytes, tar, blob_bytes (of each blob:
        size_bytes, or the tar archive's size with --tar), count, clients, threads, seed,
        prepass_s (monolithic: digest pre-pass, excluded from every timing), elapsed_s,
        uploads_done, bytes (blob bytes uploaded), mb_per_s (blob bytes / upload wall time),
        requests (HTTP requests of the uploads), upload{latency},
        upload_mb_per_s{p50,p90,p99,min} (per upload), manifests{latency},
        manifests_elapsed_s, config_digest, connects, errors, error_kinds{...}
  get:  workload, urls, method, connections, threads, expect_digest, elapsed_s, requests
        (all, failed ones too), requests_per_s (successful ones), bytes, mb_per_s, connects,
        errors, error_kinds{...}, latency{latency}
  seed: workload, registry, image, format, seed, pushed, out_dir, elapsed_s, manifest_digest,
        manifest_size, manifest_media_type, config{digest,size}, layers[{digest,size}],
        errors, error_kinds; with --blob-only: workload=seed-blob, registry, repo, digest,
        size, seed, pushed, out_dir, elapsed_s, mb_per_s (of the push), errors, error_kinds;
        with --images N: workload=seed-images, registry, name, repos, images, images_done,
        layers_per_image, layer_bytes, blobs (layers + configs pushed), clients, threads, seed,
        list (the --list file), elapsed_s, images_per_s, blobs_per_s, image{latency} (one
        image's blobs and manifest), errors, error_kinds
  delete: workload, registry, list, manifests (lines of the list), deleted, clients, threads,
        elapsed_s, deletes_per_s, latency{latency}, errors, error_kinds
Exit status: 0 when no error was counted, 1 when some were (unless --allow-errors),
2 for bad usage or setup failures, 3 when the --max-seconds watchdog ended the run.";

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    about = "Load generator for OCI registries (ringyard, distribution, nginx serving the same files)",
    after_long_help = JSON_DOC
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Concurrent clients pulling an image the way containerd does.
    Pull(PullArgs),
    /// Concurrent blob uploads (monolithic, streamed or chunked), then a manifest per blob.
    Push(PushArgs),
    /// Push a deterministic generated image (or one large blob, or many small images), and/or
    /// lay it out as files.
    Seed(SeedArgs),
    /// DELETE manifests by digest, as listed by `seed --images N --list FILE`.
    Delete(DeleteArgs),
    /// wrk-like keep-alive GETs of fixed URLs (static-bytes workload).
    Get(GetArgs),
    /// Measure the blob generator alone (no network).
    #[command(hide = true)]
    Gen(GenArgs),
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Event-loop threads; clients are spread over them. Default: number of cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds one request may take, plus 1 s per 16 MiB of body it carries or receives.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Bound of the whole run: no new work starts after it; a watchdog ends the process
    /// (exit 3) if work in flight overruns it by more than --timeout plus 30 s.
    #[arg(long, default_value_t = 900)]
    pub max_seconds: u64,
    /// Print one JSON object on stdout instead of text (fields: see --help).
    #[arg(long)]
    pub json: bool,
    /// Exit 0 even when errors were counted.
    #[arg(long)]
    pub allow_errors: bool,
}

#[derive(Args, Debug)]
#[command(after_long_help = JSON_DOC)]
pub struct PullArgs {
    /// Registry base URL, http://HOST:PORT.
    #[arg(long)]
    pub registry: String,
    /// Image to pull: NAME:TAG (or NAME@sha256:...).
    #[arg(long, value_parser = parse_image)]
    pub image: ImageRef,
    /// Concurrent clients, each with three keep-alive connections.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Pulls in total, shared by the clients (default 100; unbounded with --duration or
    /// --stop-file, unless given).
    #[arg(long)]
    pub pulls: Option<u64>,
    /// No new pull starts after this many seconds (pulls in flight then finish).
    #[arg(long)]
    pub duration: Option<f64>,
    /// No new pull starts once this file exists (pulls in flight then finish): another
    /// process ends the run when its own work ends.
    #[arg(long, value_name = "FILE")]
    pub stop_file: Option<std::path::PathBuf>,
    /// Do not sha256-verify manifests and blobs (sizes are still checked).
    #[arg(long)]
    pub no_verify: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PushMode {
    /// POST, then PUT <location>?digest= with the whole body (digest computed beforehand).
    Monolithic,
    /// POST, one PATCH streaming the whole body (hashed while sent), PUT ?digest= without body.
    Stream,
}

#[derive(Args, Debug)]
#[command(after_long_help = JSON_DOC)]
pub struct PushArgs {
    #[arg(long)]
    pub registry: String,
    /// Size of every blob (4KiB, 512MiB, 1GiB, plain bytes ...).
    #[arg(long, value_parser = parse_size)]
    pub size: u64,
    /// Number of blobs (and manifests).
    #[arg(long, default_value_t = 1)]
    pub count: u64,
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Upload in PATCH chunks of this many bytes with Content-Range (overrides --mode).
    #[arg(long, value_parser = parse_size)]
    pub chunked: Option<u64>,
    #[arg(long, value_enum, default_value_t = PushMode::Monolithic)]
    pub mode: PushMode,
    /// Repository to push into.
    #[arg(long, default_value = "loadtest/push")]
    pub repo: String,
    /// Seed of the blob bytes; default: from the clock, so repeated runs never share blobs.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Each blob an uncompressed tar of SIZE generated bytes in files of 1 MiB (512 bytes
    /// more per file and 1 KiB at the end), pushed as a tar layer with a config of its own
    /// naming it, so that a registry that scans pushes reads real files.
    #[arg(long)]
    pub tar: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Oci,
    Docker,
}

#[derive(Args, Debug)]
#[command(after_long_help = JSON_DOC)]
pub struct SeedArgs {
    /// Registry base URL; may be omitted when --out-dir is given.
    #[arg(long)]
    pub registry: Option<String>,
    /// NAME:TAG of the image (with --blob-only: the repository NAME; a tag is ignored).
    #[arg(long, value_parser = parse_image)]
    pub image: ImageRef,
    /// Layer sizes, comma-separated: 2MiB,768KiB,256KiB.
    #[arg(long, value_delimiter = ',', value_parser = parse_size, required_unless_present = "blob_only")]
    pub layers: Vec<u64>,
    #[arg(long, value_enum, default_value_t = Format::Oci)]
    pub format: Format,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also (or only) write the bytes under DIR as DIR/v2/<name>/{manifests,blobs}/<ref>.
    #[arg(long)]
    pub out_dir: Option<std::path::PathBuf>,
    /// Push one blob of this size instead of an image (streamed, never held in memory).
    #[arg(long, value_parser = parse_size, conflicts_with = "layers")]
    pub blob_only: Option<u64>,
    /// Push this many images instead of one, each with layers of the --layers sizes and a
    /// config of its own (all blobs distinct), monolithic uploads, tagged TAG-<i>; to a
    /// registry only.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..),
          conflicts_with_all = ["blob_only", "out_dir"])]
    pub images: u64,
    /// With --images: spread the images over this many repositories, NAME-<r> (image i in
    /// repository i % R); with 1, all in NAME.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub repos: u64,
    /// With --images: images pushed at once (one connection each).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// With --images: write one line per image pushed, NAME:TAG@DIGEST, in image order.
    #[arg(long, value_name = "FILE")]
    pub list: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
#[command(after_long_help = JSON_DOC)]
pub struct DeleteArgs {
    /// Registry base URL, http://HOST:PORT.
    #[arg(long)]
    pub registry: String,
    /// Manifests to delete, one NAME[:TAG]@DIGEST a line (the format of `seed --list`);
    /// each is deleted by digest (its tags go with it).
    #[arg(long, value_name = "FILE")]
    pub list: std::path::PathBuf,
    /// Deletes in flight at once (one connection each).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Method {
    #[value(name = "GET")]
    Get,
    #[value(name = "HEAD")]
    Head,
}

#[derive(Args, Debug)]
#[command(after_long_help = JSON_DOC)]
#[command(group(clap::ArgGroup::new("bound").required(true).multiple(true).args(["duration", "requests"])))]
pub struct GetArgs {
    /// URL to request (repeatable; connections cycle through them). All on one HOST:PORT.
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Run for this many seconds (requests in flight then finish).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Stop after this many requests in total.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Extra request header, 'Name: value' (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    #[arg(long, value_enum, default_value_t = Method::Get)]
    pub method: Method,
    /// sha256 every body and compare with this digest.
    #[arg(long)]
    pub expect_digest: Option<String>,
    /// CA certificates (PEM) that https:// URLs' server certificates are verified against.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// A new connection (TCP and, for https://, a full TLS handshake) for every request.
    #[arg(long)]
    pub new_connection: bool,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub common: Common,
}

/// Credentials sent on every request (see `auth`).
#[derive(Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// `Authorization: Basic` with USER:PASSWORD on every request (or, with --token-realm,
    /// on the token request only).
    #[arg(long, value_name = "USER:PASSWORD")]
    pub basic: Option<String>,
    /// `Authorization: Bearer TOKEN` on every request.
    #[arg(long, value_name = "TOKEN")]
    pub bearer: Option<String>,
    /// Fetch a token once before the run from this token service URL (http://HOST:PORT/token),
    /// with the --basic credentials, and send it as Bearer on every request.
    #[arg(long, value_name = "URL")]
    pub token_realm: Option<String>,
    /// The `service` parameter of the token request.
    #[arg(long, value_name = "SERVICE")]
    pub token_service: Option<String>,
    /// A `scope` of the token request, e.g. repository:NAME:pull (repeatable).
    #[arg(long = "token-scope", value_name = "SCOPE")]
    pub token_scopes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct GenArgs {
    #[arg(long, value_parser = parse_size, default_value = "4GiB")]
    pub size: u64,
    /// Also sha256 the bytes.
    #[arg(long)]
    pub hash: bool,
}

/// NAME plus TAG or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub reference: String,
}

impl ImageRef {
    pub fn is_digest(&self) -> bool {
        self.reference.starts_with("sha256:")
    }
}

/// `name:tag`, `name@sha256:...`, or `name` (tag `latest`). Names may contain `/`; a
/// `host:port/` prefix is not part of the name here (the registry is given separately).
pub fn parse_image(s: &str) -> Result<ImageRef, String> {
    let (name, reference) = if let Some((n, d)) = s.split_once('@') {
        (n, d.to_string())
    } else {
        match s.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t.to_string()),
            _ => (s, "latest".to_string()),
        }
    };
    let name_ok = !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if !name_ok {
        return Err(format!("invalid repository name in {s:?}"));
    }
    if reference.is_empty() || reference.contains('/') {
        return Err(format!("invalid tag or digest in {s:?}"));
    }
    Ok(ImageRef {
        name: name.to_string(),
        reference,
    })
}

/// Sizes: plain bytes, or a number (fractions allowed) with a unit: B; KiB MiB GiB TiB and
/// K M G T (powers of 1024); KB MB GB TB (powers of 1000). Units are case-insensitive.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "unknown size unit in {s:?} (use B, KiB, MiB, GiB, KB, MB ...)"
            ))
        }
    };
    if num.is_empty() {
        return Err(format!("size {s:?} has no number"));
    }
    if let Ok(n) = num.parse::<u64>() {
        return n
            .checked_mul(mult)
            .ok_or_else(|| format!("size {s:?} is too large"));
    }
    let f: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let v = (f * mult as f64).round();
    if !(0.0..1.8e19).contains(&v) {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok(v as u64)
}

/// `Name: value` for --header.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once(':')
        .ok_or_else(|| format!("header {s:?} must be 'Name: value'"))?;
    let k = k.trim();
    if k.is_empty()
        || !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        return Err(format!("invalid header name in {s:?}"));
    }
    Ok((k.to_string(), v.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("768kib").unwrap(), 768 * 1024);
        assert_eq!(parse_size("2M").unwrap(), 2 << 20);
        assert_eq!(parse_size("1MB").unwrap(), 1_000_000);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("7B").unwrap(), 7);
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("1.2.3MiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn images() {
        assert_eq!(
            parse_image("library/app:1.0").unwrap(),
            ImageRef {
                name: "library/app".into(),
                reference: "1.0".into()
            }
        );
        assert_eq!(parse_image("app").unwrap().reference, "latest");
        let d = parse_image("a/b@sha256:abc").unwrap();
        assert!(d.is_digest());
        assert_eq!(d.name, "a/b");
        assert!(parse_image("App:1").is_err());
        assert!(parse_image(":1").is_err());
        assert!(parse_image("a//b:1").is_err());
    }

    #[test]
    fn headers() {
        assert_eq!(
            parse_header("Accept: application/json, */*").unwrap(),
            ("Accept".into(), "application/json, */*".into())
        );
        assert!(parse_header("no colon").is_err());
        assert!(parse_header(": v").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "loadtest",
            "get",
            "--url",
            "http://127.0.0.1:1/v2/",
            "--connections",
            "4",
            "--requests",
            "10",
        ])
        .unwrap();
        assert!(matches!(c.cmd, Command::Get(_)));
        assert!(Cli::try_parse_from(["loadtest", "get", "--url", "http://a:1/"]).is_err());
        let c = Cli::try_parse_from([
            "loadtest",
            "seed",
            "--out-dir",
            "/tmp/x",
            "--image",
            "a:b",
            "--layers",
            "1KiB,2KiB",
        ])
        .unwrap();
        match c.cmd {
            Command::Seed(s) => assert_eq!(s.layers, vec![1024, 2048]),
            _ => panic!(),
        }
        assert!(
            Cli::try_parse_from(["loadtest", "seed", "--image", "a:b", "--blob-only", "1GiB"])
                .is_ok()
        );
        assert!(Cli::try_parse_from(["loadtest", "seed", "--image", "a:b"]).is_err());
        let parse = |line: &str| Cli::try_parse_from(line.split_whitespace());
        let c = parse(
            "loadtest seed --registry http://a:1 --image a:b --layers 1KiB,2KiB --images 100 \
             --repos 10 --list /tmp/l",
        )
        .unwrap();
        match c.cmd {
            Command::Seed(s) => assert_eq!((s.images, s.repos, s.layers.len()), (100, 10, 2)),
            _ => panic!(),
        }
        // Many images go to a registry only; at least one.
        assert!(
            parse("loadtest seed --out-dir /tmp/x --image a:b --layers 1KiB --images 2").is_err()
        );
        assert!(
            parse("loadtest seed --registry http://a:1 --image a:b --layers 1KiB --images 0")
                .is_err()
        );
        let c = parse("loadtest pull --registry http://a:1 --image a:b --duration 2.5").unwrap();
        match c.cmd {
            Command::Pull(p) => assert_eq!((p.pulls, p.duration), (None, Some(2.5))),
            _ => panic!(),
        }
        assert!(parse("loadtest delete --registry http://a:1 --list /tmp/l").is_ok());
    }
}
