//! A layer blob turned into its tar stream, every decompressed byte counted, so that a
//! bomb stops at the limit and a failure is told apart: the blob's own reader failing,
//! the budget spent, or the stream ending early.

use std::cell::{Cell, RefCell};
use std::io::{self, BufRead, Read, Seek, SeekFrom};

/// How a layer was compressed, found from its first bytes: a media type is what the
/// pusher claimed, the magic is what the bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Tar,
    Gzip,
    Zstd,
}

impl Format {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::Gzip => "gzip-compressed tar",
            Format::Zstd => "zstd-compressed tar",
        }
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How `raw` is compressed, from its first bytes; `raw` is left at its start.
pub(crate) fn sniff<R: Read + Seek>(raw: &mut R) -> io::Result<Format> {
    let mut magic = [0u8; 4];
    let mut got = 0;
    while let Some(rest) = magic.get_mut(got..).filter(|r| !r.is_empty()) {
        match raw.read(rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    raw.seek(SeekFrom::Start(0))?;
    let head = magic.get(..got).unwrap_or_default();
    Ok(if head.starts_with(&GZIP_MAGIC) {
        Format::Gzip
    } else if head == ZSTD_MAGIC {
        Format::Zstd
    } else {
        Format::Tar
    })
}

/// The tar stream inside `raw`, decompressed as `format` says.
pub(crate) fn decoder<'a, R: BufRead + 'a>(
    format: Format,
    raw: R,
) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match format {
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(raw)),
        // zstd keeps its default window limit (128 MiB): frames that ask for more fail.
        Format::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(raw)?),
        Format::Tar => Box::new(raw),
    })
}

/// A plain tar layer read by position: the bodies no keeper reads are passed over by
/// seeking, not read, so an uncompressed layer costs its headers and the files kept,
/// whatever its size. A pass beyond the blob's end fails as truncation, as reading would.
pub(crate) struct Seeking<R> {
    inner: io::BufReader<R>,
    pos: u64,
    len: u64,
}

/// Read at a time between seeks: a header and the start of its body, or a few entries of
/// small files. Small, as what follows a header is mostly passed over (and a scan beside
/// pushes is paced by the bytes it reads).
const SEEKING_BUFFER: usize = 4096;

impl<R: Read + Seek> Seeking<R> {
    /// `raw` at its start; its length is asked of it.
    pub(crate) fn new(mut raw: R) -> io::Result<Self> {
        let len = raw.seek(SeekFrom::End(0))?;
        raw.seek(SeekFrom::Start(0))?;
        Ok(Seeking {
            inner: io::BufReader::with_capacity(SEEKING_BUFFER, raw),
            pos: 0,
            len,
        })
    }
}

impl<R: Read> Read for Seeking<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Seeking<R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let n = forward(to)?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the layer ends inside an entry ({} bytes to pass at {} of {})",
                        n, self.pos, self.len
                    ),
                )
            })?;
        // Within what is buffered, no system call; beyond it, one seek.
        self.inner.seek_relative(n as i64)?;
        self.pos = end;
        Ok(end)
    }
}

/// How far forward `to` moves: the tar reader only ever passes over bytes.
fn forward(to: SeekFrom) -> io::Result<u64> {
    match to {
        SeekFrom::Current(n) if n >= 0 => Ok(n as u64),
        _ => Err(io::Error::other("a layer is read forward only")),
    }
}

/// What happened to the byte streams of one layer, shared by the readers below (the tar
/// crate owns them, so they report here rather than through their errors).
#[derive(Debug)]
pub(crate) struct Watch {
    used: Cell<u64>,
    limit: u64,
    over: Cell<bool>,
    /// While set, at most this many more bytes may be read: bounds what the tar crate
    /// reads into memory between entries (GNU long names, pax records).
    window: Cell<Option<u64>>,
    window_over: Cell<bool>,
    ended: Cell<bool>,
    /// The tar reader passes over unread bodies by seeking (a plain layer, [`Seeking`]):
    /// there is nothing to drain.
    seeks: Cell<bool>,
    source_error: RefCell<Option<io::Error>>,
}

impl Watch {
    /// `used` bytes already spent by earlier layers of the image, of `limit`.
    pub(crate) fn new(used: u64, limit: u64) -> Self {
        Watch {
            used: Cell::new(used),
            limit,
            over: Cell::new(used > limit),
            window: Cell::new(None),
            window_over: Cell::new(false),
            ended: Cell::new(false),
            seeks: Cell::new(false),
            source_error: RefCell::new(None),
        }
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.get()
    }

    pub(crate) fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.used.get())
    }

    /// Spends `n` bytes that were produced without being read from the stream (the holes
    /// of a sparse file), so they cost time only within the budget.
    pub(crate) fn charge(&self, n: u64) -> bool {
        let used = self.used.get().saturating_add(n);
        self.used.set(used);
        if used > self.limit {
            self.over.set(true);
        }
        !self.over.get()
    }

    pub(crate) fn open_window(&self, n: u64) {
        self.window.set(Some(n));
    }

    pub(crate) fn close_window(&self) {
        self.window.set(None);
    }

    pub(crate) fn over(&self) -> bool {
        self.over.get()
    }

    pub(crate) fn window_over(&self) -> bool {
        self.window_over.get()
    }

    /// Whether the decompressed stream has ended: a tar error after that is truncation.
    pub(crate) fn ended(&self) -> bool {
        self.ended.get()
    }

    pub(crate) fn set_seeks(&self) {
        self.seeks.set(true);
    }

    pub(crate) fn seeks(&self) -> bool {
        self.seeks.get()
    }

    pub(crate) fn take_source_error(&self) -> Option<io::Error> {
        self.source_error.borrow_mut().take()
    }
}

/// The caller's blob reader, its failures kept aside so that a disk or network error is
/// not reported as a corrupt layer.
pub(crate) struct Source<'w, R> {
    pub(crate) inner: R,
    pub(crate) watch: &'w Watch,
}

impl<R> Source<'_, R> {
    fn failed(&self, e: io::Error) -> io::Error {
        let kind = e.kind();
        if kind != io::ErrorKind::Interrupted {
            *self.watch.source_error.borrow_mut() = Some(e);
        }
        io::Error::new(kind, "reading the layer blob failed")
    }
}

impl<R: Read> Read for Source<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|e| self.failed(e))
    }
}

impl<R: Seek> Seek for Source<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to).map_err(|e| self.failed(e))
    }
}

/// The decompressed stream, every byte counted against the image's budget.
pub(crate) struct Metered<'w, R> {
    pub(crate) inner: R,
    pub(crate) watch: &'w Watch,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let w = self.watch;
        // One byte past the budget is enough to know it is exceeded.
        let mut want = w.remaining().saturating_add(1);
        if let Some(window) = w.window.get() {
            if window == 0 {
                w.window_over.set(true);
                return Err(io::Error::other("tar extension headers too large"));
            }
            want = want.min(window);
        }
        let want = usize::try_from(want).unwrap_or(usize::MAX).min(buf.len());
        let n = match buf.get_mut(..want) {
            Some(part) => self.inner.read(part)?,
            None => 0,
        };
        if n == 0 {
            w.ended.set(true);
        }
        if !w.charge(n as u64) {
            return Err(io::Error::other("layer budget spent"));
        }
        if let Some(window) = w.window.get() {
            w.window.set(Some(window.saturating_sub(n as u64)));
        }
        Ok(n)
    }
}

/// Bytes passed over count against the budget as bytes read do.
impl<R: Read + Seek> Seek for Metered<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let n = forward(to)?;
        if !self.watch.charge(n) {
            return Err(io::Error::other("layer budget spent"));
        }
        self.inner.seek(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(raw: &[u8]) -> (Format, Vec<u8>) {
        let mut raw = io::Cursor::new(raw);
        let format = sniff(&mut raw).expect("sniff");
        let mut out = Vec::new();
        decoder(format, io::BufReader::new(raw))
            .expect("open")
            .read_to_end(&mut out)
            .expect("read");
        (format, out)
    }

    #[test]
    fn formats_are_told_by_magic() {
        let plain = b"hello, not compressed".to_vec();
        assert_eq!(read_all(&plain), (Format::Tar, plain.clone()));

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &plain).expect("gzip");
        let gz = gz.finish().expect("gzip");
        assert_eq!(read_all(&gz), (Format::Gzip, plain.clone()));

        let zst = zstd::encode_all(&plain[..], 3).expect("zstd");
        assert_eq!(read_all(&zst), (Format::Zstd, plain.clone()));

        assert_eq!(read_all(b""), (Format::Tar, Vec::new()));
        assert_eq!(read_all(b"\x1f"), (Format::Tar, b"\x1f".to_vec()));
    }

    #[test]
    fn seeking_passes_over_bytes_within_the_blob_only() {
        let bytes: Vec<u8> = (0..100u8).collect();
        let mut r = Seeking::new(io::Cursor::new(&bytes[..])).expect("new");
        let mut two = [0u8; 2];
        r.read_exact(&mut two).expect("read");
        assert_eq!(r.seek(SeekFrom::Current(48)).ok(), Some(50));
        r.read_exact(&mut two).expect("read");
        assert_eq!(two, [50, 51]);
        assert_eq!(r.seek(SeekFrom::Current(48)).ok(), Some(100));
        let e = r.seek(SeekFrom::Current(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(r.seek(SeekFrom::Start(0)).is_err(), "forward only");
        assert!(r.seek(SeekFrom::Current(-1)).is_err(), "forward only");

        // What is passed over is charged like what is read.
        let watch = Watch::new(0, 60);
        let mut m = Metered {
            inner: Seeking::new(io::Cursor::new(&bytes[..])).expect("new"),
            watch: &watch,
        };
        assert!(m.seek(SeekFrom::Current(50)).is_ok());
        assert_eq!(watch.used(), 50);
        assert!(m.seek(SeekFrom::Current(20)).is_err());
        assert!(watch.over());
    }

    #[test]
    fn metered_stops_one_byte_past_the_budget() {
        let watch = Watch::new(10, 100);
        let mut r = Metered {
            inner: io::repeat(7),
            watch: &watch,
        };
        let mut buf = [0u8; 64];
        assert_eq!(r.read(&mut buf).ok(), Some(64));
        assert!(r.read(&mut buf).is_err());
        assert!(watch.over());
        assert_eq!(watch.used(), 101);

        // A stream that ends exactly at the budget is within it.
        let watch = Watch::new(0, 100);
        let mut r = Metered {
            inner: io::repeat(7).take(100),
            watch: &watch,
        };
        let mut out = Vec::new();
        assert_eq!(r.read_to_end(&mut out).ok(), Some(100));
        assert!(!watch.over());
    }

    #[test]
    fn window_bounds_reads_between_entries() {
        let watch = Watch::new(0, u64::MAX);
        let mut r = Metered {
            inner: io::repeat(7),
            watch: &watch,
        };
        let mut buf = [0u8; 64];
        watch.open_window(100);
        assert_eq!(r.read(&mut buf).ok(), Some(64));
        assert_eq!(r.read(&mut buf).ok(), Some(36));
        assert!(r.read(&mut buf).is_err());
        assert!(watch.window_over());
        watch.close_window();
        assert_eq!(r.read(&mut buf).ok(), Some(64));
    }
}
