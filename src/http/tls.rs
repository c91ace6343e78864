//! TLS over a connection's socket: our own glue between rustls, which is sans-IO (ciphertext in
//! by `read_tls`, out by `write_tls`, plaintext through its reader and writer), and monoio's
//! owned-buffer socket, as a [`Transport`]. The server's side ([`accept`]) and, for the S3
//! backend's https endpoints, a client's ([`connect`]): the same loops over either rustls
//! connection.
//!
//! Not monoio-rustls: its 0.4 pulls rustls with default features (aws-lc-rs, a C and assembly
//! build, next to the `ring` provider used here) and a buffering IO wrapper of its own, and
//! offers nothing for the one thing this seam needs beyond reads and writes (file ranges). The
//! glue is the three loops below.
//!
//! File bodies go through the default [`Transport::send_file`] ([`copy_range`]: io_uring reads
//! of 256 KiB, each encrypted and written), so a download holds one read buffer and one
//! record buffer of ciphertext whatever its size. kTLS (rustls hands the keys to the kernel,
//! after which `sendfile` works again) needs the kernel's `tls` ULP, which the machines this
//! was measured on do not have (`/proc/sys/net/ipv4/tcp_available_ulp`); see the README.
//!
//! [`copy_range`]: super::transport::copy_range

use super::transport::Transport;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ConnectionCommon, ServerConfig, ServerConnection};
use std::io::{self, BufRead, Write};
use std::ops::DerefMut;
use std::sync::Arc;

/// Ciphertext read from the socket at once: several full records (16 KiB and a few bytes each).
const CIPHER_READ: usize = 64 * 1024;

/// How a connection's first bytes turned out.
pub enum Accepted {
    /// The handshake is done: requests follow over TLS. (Boxed: rustls's connection state is
    /// over a kilobyte.)
    Tls(Box<TlsTransport>),
    /// The client spoke plain HTTP to the TLS port; the socket is handed back so the server can
    /// say so in plain HTTP (its request is unread).
    PlainHttp(TcpStream),
}

/// A TLS connection whose handshake is done: the server's side by default, a client's with
/// `C = ClientConnection`.
pub struct TlsTransport<C = ServerConnection> {
    stream: TcpStream,
    tls: C,
    /// Ciphertext read from the socket that rustls has not taken yet: `rbuf[rpos..]`.
    rbuf: Vec<u8>,
    rpos: usize,
    /// Ciphertext rustls produced, on its way to the socket; kept from one write to the next.
    wbuf: Vec<u8>,
}

/// Runs the server side of the handshake on `stream` with `config` (the one current when the
/// connection arrived: a reload later does not change it). The caller bounds it in time.
pub async fn accept(stream: TcpStream, config: Arc<ServerConfig>) -> io::Result<Accepted> {
    let _ = stream.set_nodelay(true);
    let tls = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut t = TlsTransport::new(stream, tls);
    if !t.handshake(true).await? {
        return Ok(Accepted::PlainHttp(t.stream));
    }
    Ok(Accepted::Tls(Box::new(t)))
}

/// Runs the client side of the handshake on `stream`, verifying that the server's certificate
/// names `name`. The caller bounds it in time.
pub async fn connect(
    stream: TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> io::Result<TlsTransport<ClientConnection>> {
    let tls = ClientConnection::new(config, name).map_err(io::Error::other)?;
    let mut t = TlsTransport::new(stream, tls);
    t.handshake(false).await?;
    Ok(t)
}

/// Whether a connection's first bytes are an HTTP request rather than a TLS record (whose
/// first byte is a content type, 0x14 to 0x18, never a letter).
pub fn looks_like_plain_http(first: &[u8]) -> bool {
    first.first().is_some_and(u8::is_ascii_uppercase)
}

impl<C, D> TlsTransport<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
{
    fn new(stream: TcpStream, tls: C) -> TlsTransport<C> {
        TlsTransport {
            stream,
            tls,
            rbuf: Vec::with_capacity(CIPHER_READ),
            rpos: 0,
            wbuf: Vec::new(),
        }
    }

    /// Drives the handshake to its end; false (and nothing sent) when `sniff` is set and the
    /// peer's first bytes are a plain HTTP request.
    async fn handshake(&mut self, sniff: bool) -> io::Result<bool> {
        let mut first = sniff;
        while self.tls.is_handshaking() {
            if self.tls.wants_write() {
                self.flush().await?;
                continue;
            }
            if self.rpos == self.rbuf.len() {
                if self.read_cipher().await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the peer closed the connection during the TLS handshake",
                    ));
                }
                if first && looks_like_plain_http(&self.rbuf) {
                    return Ok(false);
                }
                first = false;
            }
            self.feed().await?;
        }
        // The last flight (the server's Finished in TLS 1.2, tickets in 1.3) goes out now, not
        // with the first message.
        self.flush().await?;
        Ok(true)
    }

    /// Reads ciphertext from the socket into the (consumed) read buffer; 0 is end of stream,
    /// which rustls is told of.
    async fn read_cipher(&mut self) -> io::Result<usize> {
        let mut buf = std::mem::take(&mut self.rbuf);
        buf.clear();
        self.rpos = 0;
        let (res, buf) = self.stream.read(buf).await;
        self.rbuf = buf;
        let n = res?;
        if n == 0 {
            self.tls.read_tls(&mut &[][..])?;
        }
        Ok(n)
    }

    /// Gives buffered ciphertext to rustls and processes it; on a protocol error the alert
    /// rustls prepared is sent (best effort) before the error is returned.
    async fn feed(&mut self) -> io::Result<()> {
        let mut rest = &self.rbuf[self.rpos..];
        let taken = self.tls.read_tls(&mut rest)?;
        self.rpos += taken;
        if let Err(e) = self.tls.process_new_packets() {
            let _ = self.flush().await;
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(())
    }

    /// Writes every record rustls has ready.
    async fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            let mut buf = std::mem::take(&mut self.wbuf);
            buf.clear();
            self.tls.write_tls(&mut buf)?;
            let (res, buf) = self.stream.write_all(buf).await;
            self.wbuf = buf;
            res?;
        }
        Ok(())
    }
}

impl<C, D> Transport for TlsTransport<C>
where
    C: DerefMut<Target = ConnectionCommon<D>>,
{
    async fn read<B: IoBufMut>(&mut self, mut buf: B) -> (io::Result<usize>, B) {
        loop {
            match self.tls.reader().fill_buf() {
                Ok(plain) => {
                    let n = plain.len().min(buf.bytes_total());
                    // SAFETY: `buf` has room for `bytes_total()` bytes at `write_ptr()`, and
                    // `n` bytes of it are written here before being declared initialized.
                    unsafe {
                        std::ptr::copy_nonoverlapping(plain.as_ptr(), buf.write_ptr(), n);
                        buf.set_init(n);
                    }
                    self.tls.reader().consume(n);
                    // n == 0: the client closed the session (close_notify).
                    return (Ok(n), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed the socket without close_notify: for HTTP, whose messages
                // carry their own lengths (a cut one is found short by its reader), the end of
                // the stream like any other.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
            // Records rustls wants to send first (a key update's answer, an alert).
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
            if self.rpos == self.rbuf.len() {
                if let Err(e) = self.read_cipher().await {
                    return (Err(e), buf);
                }
                // End of stream included: rustls now knows, and the reader above says so.
            }
            if let Err(e) = self.feed().await {
                return (Err(e), buf);
            }
        }
    }

    async fn write_all<B: IoBuf>(&mut self, buf: B) -> (io::Result<()>, B) {
        // SAFETY: the first `bytes_init()` bytes at `read_ptr()` are initialized and `buf`
        // is not touched while this slice lives.
        let plain = unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) };
        let mut at = 0;
        while at < plain.len() {
            // rustls takes as much as its outgoing buffer has room for (64 KiB), sealed into
            // records; the flush empties it for the next part.
            match self.tls.writer().write(&plain[at..]) {
                Ok(n) => at += n,
                Err(e) => return (Err(e), buf),
            }
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
        }
        (Ok(()), buf)
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.tls.send_close_notify();
        self.flush().await?;
        self.stream.shutdown().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_a_plain_request_from_a_client_hello() {
        assert!(looks_like_plain_http(b"GET /v2/ HTTP/1.1\r\n"));
        assert!(looks_like_plain_http(b"PUT"));
        // A handshake record: content type 22, version 3.1.
        assert!(!looks_like_plain_http(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        assert!(!looks_like_plain_http(b""));
    }
}
