//! Benchmarks of making a blob durable in the local tree: the part of a push that waits on the
//! disk. Every number here includes real fsyncs (file and directory), so it measures the
//! filesystem and device under the bench directory as much as our code; compare runs on the
//! same machine only.
//!
//! Run: `cargo bench --bench blob_store`. The tree lives in a temporary directory under
//! `RINGYARD_BENCH_DIR` if set, else under cargo's target tmp dir (same disk as the build, not
//! a tmpfs), and is removed at the end. Each committed blob is unlinked after its sample is
//! timed, so the tree stays small however many iterations run.

use divan::counter::BytesCount;
use divan::Bencher;
use ringyard::blocking::Pool;
use ringyard::oci::digest::Digest;
use ringyard::store::blobs::BlobStore;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn main() {
    let driver = if monoio::utils::detect_uring() {
        "io_uring"
    } else {
        "epoll"
    };
    println!("event loop driver: {driver}");
    divan::main();
}

const SIZES: [usize; 2] = [4 * 1024, 1024 * 1024];

/// A worker's event loop: io_uring when the kernel allows it, else epoll, as the server does.
type Runtime = monoio::FusionRuntime<monoio::IoUringDriver, monoio::LegacyDriver>;

fn runtime() -> Runtime {
    monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
        .build()
        .expect("monoio runtime")
}

fn bench_root() -> tempfile::TempDir {
    let base = std::env::var_os("RINGYARD_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    fs::create_dir_all(&base).expect("bench directory");
    tempfile::Builder::new()
        .prefix("ringyard-bench-blobs-")
        .tempdir_in(base)
        .expect("temporary directory")
}

/// A store whose 256 shard directories already exist, as in any registry that has been running
/// for a while: the one-time directory creation (and its parent fsyncs) stays out of the numbers.
fn store(root: &Path) -> BlobStore {
    let store = BlobStore::open(root, Pool::new(1, "bench-blocking").unwrap()).unwrap();
    for b in 0..=255u8 {
        let probe = Digest::parse(&format!("sha256:{b:02x}{}", "0".repeat(62))).unwrap();
        fs::create_dir_all(store.path_of(&probe).parent().unwrap()).unwrap();
    }
    store
}

/// Distinct content per iteration (a counter in the first bytes), so no commit finds its blob
/// already present, which would skip the work being measured.
fn content(len: usize, n: u64) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    bytes[..8].copy_from_slice(&n.to_le_bytes());
    bytes
}

/// Returned from each iteration; divan drops it after timing, which unlinks the committed blob.
struct Committed(PathBuf);

impl Drop for Committed {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Manifest PUT: `put_bytes` (create, write, fsync, rename into the tree, fsync the directory).
#[divan::bench(args = SIZES, sample_count = 100, max_time = Duration::from_secs(10))]
fn put_bytes(bencher: Bencher, len: usize) {
    let root = bench_root();
    let store = store(root.path());
    let mut rt = runtime();
    let mut n = 0u64;
    bencher
        .counter(BytesCount::new(len))
        .with_inputs(|| {
            n += 1;
            let bytes = content(len, n);
            let digest = Digest::sha256_of(&bytes);
            let dest = store.path_of(&digest);
            (digest, bytes, dest)
        })
        .bench_local_values(|(digest, bytes, dest)| {
            rt.block_on(store.put_bytes(&digest, bytes)).unwrap();
            Committed(dest)
        });
}

/// Upload completion (`PUT .../blobs/uploads/<id>?digest=`): fsync the data the PATCHes wrote,
/// rename it into the tree, fsync the directory. Hashing is not included (it ran as bytes came in).
#[divan::bench(args = SIZES, sample_count = 100, max_time = Duration::from_secs(10))]
fn complete_upload(bencher: Bencher, len: usize) {
    let root = bench_root();
    let store = store(root.path());
    let mut rt = runtime();
    let mut n = 0u64;
    bencher
        .counter(BytesCount::new(len))
        .with_inputs(|| {
            n += 1;
            let bytes = content(len, n);
            let digest = Digest::sha256_of(&bytes);
            // Written but not yet fsynced, as the PATCH handler leaves it.
            let staged = store.staging_dir().join(format!("bench-{n}"));
            fs::write(&staged, &bytes).unwrap();
            let dest = store.path_of(&digest);
            (staged, digest, dest)
        })
        .bench_local_values(|(staged, digest, dest)| {
            rt.block_on(async {
                let file = monoio::fs::File::open(&staged).await.unwrap();
                file.sync_all().await.unwrap();
                file.close().await.unwrap();
                store.commit(staged, &digest).await.unwrap();
            });
            Committed(dest)
        });
}

/// The residency check a blob GET makes per window ahead (`mmap` + `mincore` + `munmap` of
/// 16 MiB), on a window that is in the page cache: what a hot pull pays over plain
/// `sendfile`. Its throughput set against a hot blob GET's (compare.sh's blob workload) is
/// the share of a hot pull it costs.
#[divan::bench(sample_count = 200)]
fn residency_check_of_a_window(bencher: Bencher) {
    use ringyard::http::direct::{resident, WINDOW};
    let root = bench_root();
    let path = root.path().join("window");
    fs::write(&path, content(WINDOW as usize, 1)).unwrap();
    let file = fs::File::open(&path).unwrap();
    assert!(
        resident(&file, 0..WINDOW),
        "a file just written is in the page cache"
    );
    bencher
        .counter(BytesCount::new(WINDOW))
        .bench_local(|| resident(&file, 0..WINDOW));
}

/// A blob GET's store lookup on a hot blob (`BlobStore::get`, answered from the worker's cache
/// of open files): what every pull pays per blob before `sendfile`, on the filesystem
/// deployment and on a tier over a remote backend (another tree here), where a hit also
/// touches the cache's recency.
#[divan::bench(args = ["filesystem", "tier"], sample_count = 200)]
fn get_hit(bencher: Bencher, deployment: &str) {
    use ringyard::store::fs::FsBackend;
    use std::sync::Arc;
    let root = bench_root();
    let pool = Pool::new(1, "bench-blocking").unwrap();
    let store = match deployment {
        "filesystem" => BlobStore::open(root.path(), pool).unwrap(),
        _ => {
            let remote_root = root.path().join("remote");
            for dir in BlobStore::top_dirs(&remote_root) {
                fs::create_dir_all(dir).unwrap();
            }
            let remote = Arc::new(FsBackend::at(&remote_root, pool.clone()));
            BlobStore::with_remote(&root.path().join("tier"), pool, remote, 1 << 30).unwrap()
        }
    };
    let mut rt = runtime();
    let bytes = content(64 * 1024, 1);
    let digest = Digest::sha256_of(&bytes);
    rt.block_on(store.put_bytes(&digest, bytes)).unwrap();
    rt.block_on(store.get(&digest)).unwrap().unwrap();
    bencher.bench_local(|| {
        rt.block_on(async {
            for _ in 0..100 {
                divan::black_box(store.get(&digest).await.unwrap());
            }
        })
    });
}
