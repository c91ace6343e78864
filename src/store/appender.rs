//! Appending upload bytes to a session's data file.
//!
//! Whole aligned blocks are written through an `O_DIRECT` descriptor: the device reads them
//! from our buffer, so the event loop does not copy every byte into the page cache, and a
//! 10 GB push does not fill the page cache with pages that must be allocated first (in a VM
//! whose host reclaims idle memory, that allocation made buffered writes run at a third of the
//! disk's speed; measured with `loadtest push`, see the README). The rare unaligned pieces, a
//! chunk that starts or ends inside a block, go through an ordinary descriptor; Linux keeps the
//! two views of the file coherent. Where the filesystem refuses `O_DIRECT`, every write is
//! ordinary.
//!
//! Writes are started as tasks of their own, so the caller reads and hashes the next buffer
//! while the previous one is being written.

use crate::buf::{AlignedBuf, ALIGN, UPLOAD_BUF};
use monoio::buf::IoBuf;
use monoio::fs::{File, OpenOptions};
use monoio::task::JoinHandle;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::rc::Rc;

pub struct Appender {
    direct: Option<Rc<File>>,
    plain: Rc<File>,
    /// Where the next write starts: the file offset after every write started so far.
    end: u64,
}

/// A write in flight; awaiting it gives back the buffer and how many bytes it carried.
pub type PendingWrite = JoinHandle<(io::Result<u64>, AlignedBuf)>;

impl Appender {
    /// Opens the data file for appending at `offset` (its current length).
    pub async fn open(path: &Path, offset: u64) -> io::Result<Appender> {
        let plain = OpenOptions::new().write(true).open(path).await?;
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .await
            .ok();
        Ok(Appender {
            direct: direct.map(Rc::new),
            plain: Rc::new(plain),
            end: offset,
        })
    }

    /// How many bytes the next buffer should take: up to the next block boundary while the
    /// file ends inside a block, so that the buffers after it line up with blocks.
    pub fn next_len(&self) -> usize {
        match (self.end % ALIGN as u64) as usize {
            0 => UPLOAD_BUF,
            inside => ALIGN - inside,
        }
    }

    /// Where the file ends once every write started so far is done.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Starts writing `buf` at the end of what was written so far.
    pub fn write(&mut self, buf: AlignedBuf) -> PendingWrite {
        let at = self.end;
        self.end += buf.len() as u64;
        let direct = if at.is_multiple_of(ALIGN as u64) {
            self.direct.clone()
        } else {
            None
        };
        let plain = self.plain.clone();
        monoio::spawn(write_at(direct, plain, buf, at))
    }

    /// fdatasync: the bytes of every settled write, and the file's length, are on the device.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.plain.sync_data().await
    }

    pub async fn close(self) {
        for f in [self.direct, Some(self.plain)].into_iter().flatten() {
            if let Ok(f) = Rc::try_unwrap(f) {
                let _ = f.close().await;
            }
        }
    }
}

/// The aligned front of `buf` through `direct` (when given), the rest through `plain`.
async fn write_at(
    direct: Option<Rc<File>>,
    plain: Rc<File>,
    buf: AlignedBuf,
    at: u64,
) -> (io::Result<u64>, AlignedBuf) {
    let len = buf.len();
    let aligned = if direct.is_some() {
        len / ALIGN * ALIGN
    } else {
        0
    };
    let mut buf = buf;
    if let Some(direct) = direct.filter(|_| aligned > 0) {
        let (r, slice) = direct.write_all_at(buf.slice(..aligned), at).await;
        buf = slice.into_inner();
        if let Err(e) = r {
            return (Err(e), buf);
        }
    }
    if aligned < len {
        let (r, slice) = plain
            .write_all_at(buf.slice(aligned..len), at + aligned as u64)
            .await;
        buf = slice.into_inner();
        if let Err(e) = r {
            return (Err(e), buf);
        }
    }
    (Ok(len as u64), buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buf::FillBuf;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Appends pieces of awkward sizes (so that writes start and end inside blocks and cross
    /// them), reopening between pieces as successive PATCH requests do: the file is exactly
    /// the concatenation.
    #[test]
    fn appends_unaligned_pieces_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::File::create(&path).unwrap();
        let pieces = [
            pattern(100, 1),
            pattern(ALIGN * 3 + 17, 2),
            pattern(UPLOAD_BUF + 5000, 3),
            pattern(ALIGN - 117, 4),
            pattern(2 * UPLOAD_BUF, 5),
        ];
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .build()
            .unwrap();
        let want: Vec<u8> = pieces.concat();
        rt.block_on(async {
            let mut offset = 0u64;
            for piece in &pieces {
                let mut out = Appender::open(&path, offset).await.unwrap();
                let mut rest = &piece[..];
                while !rest.is_empty() {
                    let mut buf = AlignedBuf::take();
                    let n = out.next_len().min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    let (r, buf) = out.write(buf).await;
                    offset += r.unwrap();
                    buf.give();
                }
                out.close().await;
            }
        });
        assert!(std::fs::read(&path).unwrap() == want);
    }
}
