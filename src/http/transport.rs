//! The byte stream under a [`Conn`](super::conn::Conn): what HTTP needs of a connection and
//! nothing more. Reads into an owned buffer (monoio's style: the buffer goes to the kernel
//! and comes back with the result), whole-buffer writes, a half-close, and one capability:
//! "send bytes `[start, end)` of this file", so that a transport able to move file pages
//! without a copy can, and any other still works.
//!
//! Plain TCP ([`TcpTransport`]): its file sends are `sendfile` from the page cache. TLS
//! ([`super::tls::TlsTransport`]) keeps the default file send ([`copy_range`], read, encrypt,
//! write). Tests drive the real request loop
//! over an in-memory one (`http::memory`), without a socket.
//!
//! Connections are generic over their transport, not boxed: the manifest GET hot path pays
//! no allocation and no dynamic dispatch for the seam. Timeouts stay with the connection,
//! around these futures, except for the file send, whose waits for socket space happen
//! inside the transport and are bounded by the timeout it is given.

use monoio::buf::{IoBuf, IoBufMut, SliceMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::direct::{self, DirectSend};

// The futures are not `Send` and need not be: a connection lives on one worker's event loop.
#[allow(async_fn_in_trait)]
pub trait Transport {
    /// Reads into the buffer's room; `Ok(0)` is the end of the stream. A read cancelled
    /// (timeout, shutdown) takes its buffer with it.
    async fn read<B: IoBufMut>(&mut self, buf: B) -> (io::Result<usize>, B);

    /// Writes all of the buffer.
    async fn write_all<B: IoBuf>(&mut self, buf: B) -> (io::Result<()>, B);

    /// Closes the write side; reading goes on.
    async fn shutdown(&mut self) -> io::Result<()>;

    /// Sends bytes `[start, end)` of `file`. Every wait for the peer to take bytes must end
    /// within `timeout`. The file must hold the whole range (a shorter one is an error).
    async fn send_file(
        &mut self,
        file: &File,
        range: Range<u64>,
        timeout: Duration,
    ) -> io::Result<()> {
        copy_range(self, file, range, timeout).await
    }
}

/// Size of the buffer [`copy_range`] moves a file through.
const COPY_CHUNK: usize = 256 * 1024;

/// The file send of a transport that cannot hand file pages to the kernel (TLS without
/// kTLS, memory): reads the range chunk by chunk (io_uring reads, so the event loop does not
/// wait on the disk) and writes each.
pub async fn copy_range<T: Transport + ?Sized>(
    transport: &mut T,
    file: &File,
    Range { start, end }: Range<u64>,
    timeout: Duration,
) -> io::Result<()> {
    if start >= end {
        return Ok(());
    }
    // Its own descriptor: monoio's file closes what it holds, the caller keeps `file`.
    let file = monoio::fs::File::from_std(file.try_clone()?)?;
    let mut buf = Vec::with_capacity((end - start).min(COPY_CHUNK as u64) as usize);
    let mut at = start;
    while at < end {
        buf.clear();
        let want = (end - at).min(buf.capacity() as u64) as usize;
        let (read, slice) = file.read_at(SliceMut::new(buf, 0, want), at).await;
        buf = slice.into_inner();
        match read? {
            0 => return Err(short_file()),
            n => at += n as u64,
        }
        buf = match monoio::time::timeout(timeout, transport.write_all(buf)).await {
            Ok((Ok(()), buf)) => buf,
            Ok((Err(e), _)) => return Err(e),
            Err(_) => return Err(write_timed_out()),
        };
    }
    Ok(())
}

pub(super) fn short_file() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "blob file shorter than its recorded size",
    )
}

pub(super) fn write_timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "write timed out")
}

/// Plain TCP: the transport of every connection today.
pub struct TcpTransport {
    stream: TcpStream,
}

impl TcpTransport {
    /// Built when a worker starts serving the connection (after any handoff between workers,
    /// which moves the bare socket). Nagle is off: responses are written whole, and a head
    /// waiting for an ACK would add a round trip to every small answer.
    pub fn new(stream: TcpStream) -> TcpTransport {
        let _ = stream.set_nodelay(true);
        TcpTransport { stream }
    }
}

impl Transport for TcpTransport {
    async fn read<B: IoBufMut>(&mut self, buf: B) -> (io::Result<usize>, B) {
        self.stream.read(buf).await
    }

    async fn write_all<B: IoBuf>(&mut self, buf: B) -> (io::Result<()>, B) {
        let (res, buf) = self.stream.write_all(buf).await;
        (res.map(drop), buf)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    /// Window by window ahead: a range in the page cache goes out by `sendfile` (the kernel
    /// moves its pages to the socket without a copy through this process, as nginx does);
    /// one that is not, by large direct reads sent from their buffers ([`direct`]).
    async fn send_file(
        &mut self,
        file: &File,
        Range { start, end }: Range<u64>,
        timeout: Duration,
    ) -> io::Result<()> {
        // Once for the whole send, not per window: a raw `sendfile` must not block the event
        // loop, and the direct path's io_uring writes do not depend on the flag.
        let _mode = NonBlocking::set(self.stream.as_raw_fd())?;
        let mut direct: Option<DirectSend> = None;
        // Set once direct reads are out of the question for this send.
        let mut no_direct = false;
        let mut at = start;
        while at < end {
            let window = at..direct::window_end(at, end);
            if !no_direct && !direct::resident(file, window.clone()) {
                if direct.is_none() {
                    direct = DirectSend::open(file).await;
                    no_direct = direct.is_none();
                }
                if let Some(d) = direct.as_mut() {
                    at = d.send(self, file, at..end, timeout, &mut no_direct).await?;
                    continue;
                }
            }
            at = window.end;
            self.sendfile(file, window, timeout).await?;
        }
        Ok(())
    }
}

impl TcpTransport {
    /// `sendfile` of `[start, end)`, with the kernel asked to read ahead of it. The socket is
    /// in non-blocking mode ([`NonBlocking`], set by the caller for the whole send).
    async fn sendfile(
        &mut self,
        file: &File,
        Range { start, end }: Range<u64>,
        timeout: Duration,
    ) -> io::Result<()> {
        let sock = self.stream.as_raw_fd();
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
                0 => return Err(short_file()),
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
                Err(_) => return Err(write_timed_out()),
            }
        }
        Ok(())
    }
}

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
