//! One client connection: a read buffer over the socket, request heads with deadlines, and
//! whole-buffer writes with a progress timeout. Reads and writes use monoio's owned buffers,
//! so a cancelled read (timeout, shutdown) loses its buffer: the connection is closed then.

use super::request::{parse_head, HeadError, Request};
use crate::buf::FillBuf;
use crate::server::signal::LocalSignal;
use monoio::buf::{IoBuf, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

/// Most bytes one `sendfile` call may move before the task lets the other connections of its
/// worker run: on loopback a socket rarely fills, so without a bound one download could hold
/// the event loop for a whole blob.
const SENDFILE_STEP: usize = 16 * 1024 * 1024;

/// How far ahead of the send position the kernel is asked to read the file. `sendfile` on
/// pages not in the page cache waits for the disk, with the kernel's small default readahead
/// (128 KiB); asking for the next window early keeps a download of a blob just pushed (with
/// O_DIRECT, so not cached) streaming at disk speed, and the event loop from waiting on it.
const READ_AHEAD: u64 = 32 * 1024 * 1024;

/// Puts a socket in non-blocking mode for as long as it lives and restores the flags after,
/// however the send ends (cancellation included). io_uring's own socket operations do not
/// depend on the flag; a raw `sendfile` must not block the event loop.
struct NonBlocking {
    fd: RawFd,
    flags: libc::c_int,
}

impl NonBlocking {
    fn set(fd: RawFd) -> io::Result<NonBlocking> {
        // SAFETY: fcntl on a descriptor the connection owns; no memory is involved.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK == 0 {
            // SAFETY: as above.
            if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(NonBlocking { fd, flags })
    }
}

impl Drop for NonBlocking {
    fn drop(&mut self) {
        if self.flags & libc::O_NONBLOCK == 0 {
            // SAFETY: as above.
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, self.flags) };
        }
    }
}

/// Read buffer size: large enough that a typical manifest PUT or a chunk of a blob arrives in
/// one read, small enough that thousands of idle connections stay cheap.
const READ_BUF: usize = 64 * 1024;

/// A response head buffer larger than this is not kept for the next response, so that idle
/// keep-alive connections stay small.
const WRITE_BUF_KEPT: usize = 8 * 1024;

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    /// Response heads (and small bodies) are serialized here, reused from one response to the
    /// next.
    write_buf: Vec<u8>,
    /// Set when a cancelled operation took the buffer or the peer misbehaved.
    broken: bool,
}

pub enum HeadOutcome {
    Request(Request),
    /// The peer closed, idled out, or the server is shutting down: close quietly.
    Closed,
    /// Some bytes of a head arrived but not the rest in time.
    TimedOut,
    Invalid(HeadError),
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::with_capacity(READ_BUF),
            pos: 0,
            write_buf: Vec::new(),
            broken: false,
        }
    }

    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// An error once a cancelled operation or a failure left the connection unusable.
    fn usable(&self) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection broken",
            ));
        }
        Ok(())
    }

    /// Bytes already read from the socket and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.pos = 0;
            self.buf.clear();
        }
    }

    /// Reads more bytes into the buffer, waiting at most `timeout`. Ok(0) is end of stream.
    pub async fn fill(&mut self, timeout: Duration) -> io::Result<usize> {
        self.usable()?;
        self.make_room();
        let buf = std::mem::take(&mut self.buf);
        let (len, cap) = (buf.len(), buf.capacity());
        let slice = SliceMut::new(buf, len, cap);
        match monoio::time::timeout(timeout, self.stream.read(slice)).await {
            Ok((res, slice)) => {
                self.buf = slice.into_inner();
                res
            }
            Err(_) => {
                self.broken = true;
                Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out"))
            }
        }
    }

    /// Reads straight from the socket into `out` after its initialized part, at most `max`
    /// bytes: large bodies skip the connection buffer and its copy.
    pub async fn read_direct<B: FillBuf>(
        &mut self,
        out: B,
        max: usize,
        timeout: Duration,
    ) -> (io::Result<usize>, B) {
        if let Err(e) = self.usable() {
            return (Err(e), out);
        }
        let len = out.filled();
        let end = len + out.room().min(max);
        let slice = SliceMut::new(out, len, end);
        match monoio::time::timeout(timeout, self.stream.read(slice)).await {
            Ok((res, slice)) => (res, slice.into_inner()),
            Err(_) => {
                self.broken = true;
                (
                    Err(io::Error::new(io::ErrorKind::TimedOut, "read timed out")),
                    // The read was cancelled with its buffer; the connection is done for.
                    B::empty(),
                )
            }
        }
    }

    fn make_room(&mut self) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(READ_BUF);
        }
    }

    /// Waits for and parses the next request head. The idle wait ends on `shutdown`; once the
    /// first byte is in, the whole head must arrive within `head_timeout` (slow-loris guard).
    pub async fn read_head(
        &mut self,
        max_head: usize,
        idle: Duration,
        head_timeout: Duration,
        shutdown: &LocalSignal,
    ) -> HeadOutcome {
        let mut deadline: Option<Instant> = None;
        loop {
            if !self.buffered().is_empty() {
                match parse_head(self.buffered(), max_head) {
                    Ok(Some((req, n))) => {
                        self.consume(n);
                        return HeadOutcome::Request(req);
                    }
                    Ok(None) => {}
                    Err(e) => return HeadOutcome::Invalid(e),
                }
                deadline.get_or_insert_with(|| Instant::now() + head_timeout);
            }
            let read = match deadline {
                None => {
                    if shutdown.fired() {
                        return HeadOutcome::Closed;
                    }
                    monoio::select! {
                        r = self.fill(idle) => r,
                        _ = shutdown.wait() => {
                            self.broken = true;
                            return HeadOutcome::Closed;
                        }
                    }
                }
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return HeadOutcome::TimedOut;
                    }
                    match self.fill(left).await {
                        Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                            return HeadOutcome::TimedOut
                        }
                        other => other,
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return HeadOutcome::Closed,
                Ok(_) => {}
            }
        }
    }

    /// An empty buffer for the next response head: the one the last response used, if kept.
    pub fn take_write_buf(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.write_buf);
        buf.clear();
        buf
    }

    /// Keeps a written head buffer for the next response, unless it grew large.
    pub fn return_write_buf(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= WRITE_BUF_KEPT {
            self.write_buf = buf;
        }
    }

    /// Writes the whole buffer; each write must make progress within `timeout`, so a client
    /// that stops reading a large download cannot hold the connection forever.
    pub async fn write_all<T: IoBuf>(&mut self, buf: T, timeout: Duration) -> io::Result<T> {
        self.usable()?;
        match monoio::time::timeout(timeout, self.stream.write_all(buf)).await {
            Ok((Ok(_), buf)) => Ok(buf),
            Ok((Err(e), _)) => {
                self.broken = true;
                Err(e)
            }
            Err(_) => {
                self.broken = true;
                Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"))
            }
        }
    }

    /// Sends `[start, end)` of `file` with `sendfile`: the kernel moves page-cache pages to the
    /// socket without a copy through this process, as nginx does. Each wait for socket space
    /// must end within `timeout`, as for [`Conn::write_all`].
    pub async fn send_file(
        &mut self,
        file: &std::fs::File,
        range: std::ops::Range<u64>,
        timeout: Duration,
    ) -> io::Result<()> {
        self.usable()?;
        let result = self.send_file_inner(file, range, timeout).await;
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    async fn send_file_inner(
        &mut self,
        file: &std::fs::File,
        std::ops::Range { start, end }: std::ops::Range<u64>,
        timeout: Duration,
    ) -> io::Result<()> {
        let sock = self.stream.as_raw_fd();
        let _mode = NonBlocking::set(sock)?;
        let mut at = start;
        let mut advised = start;
        while at < end {
            if end - at > SENDFILE_STEP as u64 && advised < end && advised - at < READ_AHEAD / 2 {
                let len = READ_AHEAD.min(end - advised);
                // SAFETY: fadvise only starts reads into the page cache; no memory of ours.
                unsafe {
                    libc::posix_fadvise(
                        file.as_raw_fd(),
                        advised as libc::off_t,
                        len as libc::off_t,
                        libc::POSIX_FADV_WILLNEED,
                    )
                };
                advised += len;
            }
            let want = (end - at).min(SENDFILE_STEP as u64) as usize;
            let mut offset = libc::off_t::try_from(at).map_err(io::Error::other)?;
            // SAFETY: both descriptors are open for the duration of the call; the kernel
            // writes only `offset`, which we own.
            let sent = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut offset, want) };
            // A full step sent: let the other tasks run (a poll that completes at once) before
            // the next. Short or would-block: wait until the socket has room again.
            let relaxed = match sent {
                n if n > 0 => {
                    at += n as u64;
                    if at == end {
                        break;
                    }
                    n as usize == want
                }
                0 => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file shorter than its recorded size",
                    ))
                }
                _ => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => false,
                        io::ErrorKind::Interrupted => continue,
                        _ => return Err(e),
                    }
                }
            };
            match monoio::time::timeout(timeout, self.stream.writable(relaxed)).await {
                Ok(r) => r?,
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
            }
        }
        Ok(())
    }

    /// Closes after a final response without resetting it away: half-close our side, then
    /// read and discard what the client still sends for a moment. Closing a socket with
    /// unread input sends RST, which can destroy a response the client has not read yet
    /// (an error answered before a large body arrived).
    pub async fn linger_close(mut self) {
        if self.broken {
            return;
        }
        let _ = self.stream.shutdown().await;
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut discarded = 0usize;
        while discarded < 8 * 1024 * 1024 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            self.pos = 0;
            self.buf.clear();
            match self.fill(left).await {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    }
}
