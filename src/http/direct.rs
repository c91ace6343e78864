//! Sending file ranges that are not in the page cache: large aligned O_DIRECT reads, several in
//! flight, written to the socket in order from their buffers.
//!
//! `sendfile` of pages not resident waits for the kernel's readahead, which fills the page
//! cache page by page; in the VMs this registry is measured on, that allocation caps a cold
//! download near a fifth of what the disk gives O_DIRECT readers. Blobs are written with
//! O_DIRECT, so every blob just pushed is cold. Residency is decided per [`WINDOW`] ahead,
//! by `cachestat(2)` where the kernel has it (Linux 6.5) and by `mincore` over a mapping of
//! the window elsewhere: a window mostly resident goes out by `sendfile`, as before; any
//! other by the reads here. The event loop never waits on the disk: reads are io_uring
//! operations.
//!
//! Only under io_uring ([`enable`] is called by workers that run it): under epoll a file read
//! blocks the thread, and `sendfile` with readahead stays the better choice there.

use crate::buf::{AlignedBuf, ALIGN};
use monoio::buf::{IoBuf, SliceMut};
use monoio::task::JoinHandle;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::transport::{short_file, write_timed_out, Transport};

/// Size of one direct read (and of its buffer): large enough for the disk's full speed.
pub const CHUNK: u64 = 4 * 1024 * 1024;

/// Buffers one send cycles through: while one is written to the socket, the others are being
/// read into, so `DEPTH - 1` reads are in flight.
const DEPTH: usize = 4;

/// The span whose residency is decided at once; a multiple of [`CHUNK`], so that no read
/// crosses windows.
pub const WINDOW: u64 = CHUNK * DEPTH as u64;

/// Direct sends one worker runs at once; more fall back to `sendfile`. Bounds the memory
/// held in read buffers to `MAX_SENDS * DEPTH * CHUNK` per worker.
const MAX_SENDS: usize = 2;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(false) };
    static SENDS: Cell<usize> = const { Cell::new(0) };
    /// Buffers of a finished send, kept for the next (a fresh allocation pays a page fault
    /// per page); one send's worth at most.
    static POOL: RefCell<Vec<AlignedBuf>> = const { RefCell::new(Vec::new()) };
}

/// Allows direct sends on this thread: its event loop runs io_uring.
pub fn enable() {
    ENABLED.with(|e| e.set(true));
}

/// The last byte of the window that starts at `at`: windows are aligned to file offsets.
pub fn window_end(at: u64, end: u64) -> u64 {
    ((at / WINDOW + 1) * WINDOW).min(end)
}

/// One read: the aligned span read from the disk, and the part of it sent.
#[derive(Debug, PartialEq, Eq)]
struct Chunk {
    read: Range<u64>,
    send: Range<u64>,
}

/// The read that sends bytes from `at` of a range ending at `end`: from the block holding
/// `at` to the next [`CHUNK`] boundary or the block holding `end`, whichever is first.
fn chunk_at(at: u64, end: u64) -> Chunk {
    let align = ALIGN as u64;
    let stop = ((at / CHUNK + 1) * CHUNK).min(end);
    Chunk {
        read: at / align * align..stop.div_ceil(align) * align,
        send: at..stop,
    }
}

/// Whether the kernel reports at least 3/4 of these page flags resident.
fn mostly_resident(pages: &[u8]) -> bool {
    let resident = pages.iter().filter(|p| *p & 1 == 1).count();
    resident * 4 >= pages.len() * 3
}

/// Whether `[start, end)` of `file` is mostly in the page cache. Anything that prevents
/// knowing (a mapping refused) answers yes: `sendfile` is always correct.
pub fn resident(file: &File, Range { start, end }: Range<u64>) -> bool {
    let align = ALIGN as u64;
    let from = start / align * align;
    let len = (end - from) as usize;
    match cached_pages(file, from, len as u64) {
        Some(cached) => cached * 4 >= (len.div_ceil(ALIGN) as u64) * 3,
        None => mapped_resident(file, from, len),
    }
}

/// [`resident`] by `mincore` over a mapping of the range (mapping without touching costs no
/// page faults), for kernels without `cachestat`.
fn mapped_resident(file: &File, from: u64, len: usize) -> bool {
    let Ok(offset) = libc::off_t::try_from(from) else {
        return true;
    };
    // SAFETY: a new private read-only mapping of our own descriptor; it is never read
    // through (no page is faulted in) and is unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            offset,
        )
    };
    if map == libc::MAP_FAILED {
        return true;
    }
    let mut pages = vec![0u8; len.div_ceil(ALIGN)];
    // SAFETY: `map` is a mapping of `len` bytes; `pages` has one byte per page of it.
    let ok = unsafe { libc::mincore(map, len, pages.as_mut_ptr()) } == 0;
    // SAFETY: unmapping exactly what was mapped above.
    unsafe { libc::munmap(map, len) };
    !ok || mostly_resident(&pages)
}

/// Set once `cachestat` answered that this kernel does not have it.
static NO_CACHESTAT: AtomicBool = AtomicBool::new(false);

/// Pages of `[from, from + len)` of `file` in the page cache, by `cachestat(2)`: a count the
/// kernel answers without a mapping, in under a microsecond for a whole window where `mincore`
/// over a 16 MiB mapping took 300 to 800 µs here (`residency_check_of_a_window` in
/// `benches/blob_store.rs`), a tenth of a hot blob GET's time. `None` where the kernel lacks
/// it (before 6.5; tried once) or refuses the range.
fn cached_pages(file: &File, from: u64, len: u64) -> Option<u64> {
    // Its number in the table every architecture added it to at once (libc does not name it
    // for glibc targets yet).
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    const SYS_CACHESTAT: Option<libc::c_long> = Some(451);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const SYS_CACHESTAT: Option<libc::c_long> = None;
    #[repr(C)]
    struct CachestatRange {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Cachestat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    let nr = SYS_CACHESTAT?;
    if NO_CACHESTAT.load(Ordering::Relaxed) {
        return None;
    }
    let range = CachestatRange { off: from, len };
    let mut stat = Cachestat::default();
    // SAFETY: the kernel reads `range` and writes `stat`, both ours and of the layout the
    // syscall defines; the descriptor is open for the call.
    let rc = unsafe {
        libc::syscall(
            nr,
            file.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0u32,
        )
    };
    if rc == 0 {
        return Some(stat.nr_cache);
    }
    if io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        NO_CACHESTAT.store(true, Ordering::Relaxed);
    }
    None
}

/// A direct send in progress on this worker: holds its slot among [`MAX_SENDS`] and its
/// buffers, which go back to the pool however the send ends.
pub struct DirectSend {
    file: Rc<monoio::fs::File>,
    free: Vec<AlignedBuf>,
}

impl DirectSend {
    /// A direct send for `file`, or `None` when this worker may not start one (not io_uring,
    /// too many running) or the file cannot be opened with O_DIRECT (tmpfs, some network
    /// filesystems).
    pub async fn open(file: &File) -> Option<DirectSend> {
        if !ENABLED.with(Cell::get) || SENDS.with(Cell::get) >= MAX_SENDS {
            return None;
        }
        SENDS.with(|s| s.set(s.get() + 1));
        let slot = SendSlot;
        // A descriptor of the same open file, with O_DIRECT; io_uring opens it, so the event
        // loop does not wait on the filesystem.
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let direct = monoio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .await
            .ok()?;
        std::mem::forget(slot);
        let free = POOL.with(|p| std::mem::take(&mut *p.borrow_mut()));
        Some(DirectSend {
            file: Rc::new(direct),
            free,
        })
    }

    /// Sends from `start` while the windows ahead are not resident. Returns where it stopped:
    /// `end`, the start of a resident window, or, if the filesystem refused a direct read, the
    /// first byte not sent (then `refused` is set and the caller goes on by `sendfile`).
    pub async fn send<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        std_file: &File,
        Range { start, end }: Range<u64>,
        timeout: Duration,
        refused: &mut bool,
    ) -> io::Result<u64> {
        let mut at = start;
        let mut inflight: VecDeque<(Chunk, Read)> = VecDeque::new();
        let mut issue = at;
        let mut stop = false;
        loop {
            // Keep DEPTH buffers busy while the windows ahead are cold.
            while !stop && issue < end && inflight.len() < DEPTH {
                // The caller decided the window `at` is in; each next one is decided here.
                if issue != at
                    && issue % WINDOW == 0
                    && resident(std_file, issue..window_end(issue, end))
                {
                    stop = true;
                    break;
                }
                let chunk = chunk_at(issue, end);
                issue = chunk.send.end;
                let buf = self
                    .free
                    .pop()
                    .unwrap_or_else(|| AlignedBuf::new(CHUNK as usize));
                let read = spawn_read(self.file.clone(), buf, &chunk);
                inflight.push_back((chunk, read));
            }
            let Some((chunk, read)) = inflight.pop_front() else {
                return Ok(at);
            };
            let (result, buf) = read.await;
            match result {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    *refused = true;
                    self.free.push(buf);
                    return Ok(at);
                }
                Err(e) => return Err(e),
            }
            let skip = (chunk.send.start - chunk.read.start) as usize;
            let len = (chunk.send.end - chunk.send.start) as usize;
            let buf = match monoio::time::timeout(
                timeout,
                transport.write_all(buf.slice(skip..skip + len)),
            )
            .await
            {
                Ok((Ok(()), piece)) => piece.into_inner(),
                Ok((Err(e), _)) => return Err(e),
                Err(_) => return Err(write_timed_out()),
            };
            at = chunk.send.end;
            self.free.push(buf);
        }
    }
}

impl Drop for DirectSend {
    fn drop(&mut self) {
        SENDS.with(|s| s.set(s.get() - 1));
        let free = std::mem::take(&mut self.free);
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            for mut b in free {
                if p.len() < DEPTH {
                    b.clear();
                    p.push(b);
                }
            }
        });
    }
}

/// Gives back a send slot taken before the send exists (its open may fail or be cancelled).
struct SendSlot;

impl Drop for SendSlot {
    fn drop(&mut self) {
        SENDS.with(|s| s.set(s.get() - 1));
    }
}

type Read = JoinHandle<(io::Result<()>, AlignedBuf)>;

/// Starts the read of `chunk` as its own task, so that it proceeds while earlier chunks are
/// written. A send that is dropped leaves it to finish and free its buffer.
fn spawn_read(file: Rc<monoio::fs::File>, mut buf: AlignedBuf, chunk: &Chunk) -> Read {
    let Range { start, end } = chunk.read.clone();
    // Bytes of the read that must arrive: the file may end inside the last block.
    let need = (chunk.send.end - start) as usize;
    monoio::spawn(async move {
        buf.clear();
        while buf.len() < need {
            let filled = buf.len();
            let (r, slice) = file
                .read_at(
                    SliceMut::new(buf, filled, (end - start) as usize),
                    start + filled as u64,
                )
                .await;
            buf = slice.into_inner();
            match r {
                Ok(0) => return (Err(short_file()), buf),
                // A short read ends at the end of the file, or is a whole number of blocks
                // (anything else could not be continued with O_DIRECT).
                Ok(n) if !(filled + n).is_multiple_of(ALIGN) && filled + n < need => {
                    return (Err(short_file()), buf)
                }
                Ok(_) => {}
                Err(e) => return (Err(e), buf),
            }
        }
        (Ok(()), buf)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn chunks_cover_an_unaligned_range_in_aligned_reads() {
        let (start, end) = (5 * MIB - 100, 13 * MIB + 7);
        let mut at = start;
        let mut chunks = Vec::new();
        while at < end {
            let c = chunk_at(at, end);
            assert_eq!(c.read.start % ALIGN as u64, 0);
            assert_eq!(c.read.end % ALIGN as u64, 0);
            assert!(c.read.end - c.read.start <= CHUNK);
            assert!(c.read.start <= c.send.start && c.send.end <= c.read.end);
            at = c.send.end;
            chunks.push(c);
        }
        assert_eq!(
            chunks,
            [
                Chunk {
                    read: 5 * MIB - 4096..8 * MIB,
                    send: 5 * MIB - 100..8 * MIB
                },
                Chunk {
                    read: 8 * MIB..12 * MIB,
                    send: 8 * MIB..12 * MIB
                },
                Chunk {
                    read: 12 * MIB..13 * MIB + 4096,
                    send: 12 * MIB..13 * MIB + 7
                },
            ]
        );
    }

    #[test]
    fn windows_are_aligned_to_the_file_and_hold_whole_chunks() {
        assert_eq!(WINDOW % CHUNK, 0);
        assert_eq!(window_end(0, 100 * MIB), WINDOW);
        assert_eq!(window_end(WINDOW - 1, 100 * MIB), WINDOW);
        assert_eq!(window_end(WINDOW, 100 * MIB), 2 * WINDOW);
        assert_eq!(window_end(WINDOW + 5, WINDOW + 9), WINDOW + 9);
    }

    #[test]
    fn residency_needs_three_quarters() {
        assert!(mostly_resident(&[1, 1, 1, 0]));
        assert!(!mostly_resident(&[1, 1, 0, 0]));
        assert!(!mostly_resident(&[0; 8]));
        assert!(mostly_resident(&[]));
    }

    #[test]
    fn a_file_just_written_is_resident_and_one_dropped_is_not() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("ringyard-direct-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        // Readable: a mapping of a write-only descriptor is refused (and reads as resident).
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        assert!(resident(&f, 100..(1 << 20)));
        assert!(mapped_resident(&f, 0, 1 << 20), "the fallback agrees");
        // SAFETY: fadvise on our own descriptor; no memory involved.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        // Dropping clean pages is advice; tmpfs keeps them (they are the file's only copy).
        let dropped = !resident(&f, 0..(1 << 20));
        assert_eq!(
            dropped,
            !mapped_resident(&f, 0, 1 << 20),
            "the fallback agrees"
        );
        let tmpfs = {
            // SAFETY: statfs fills the struct it is given.
            let mut s: libc::statfs = unsafe { std::mem::zeroed() };
            let c = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
            unsafe { libc::statfs(c.as_ptr(), &mut s) };
            s.f_type == libc::TMPFS_MAGIC
        };
        assert!(dropped || tmpfs);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
