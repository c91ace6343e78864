//! Buffers that request bodies are read into: `Vec<u8>` for small things, and page-aligned
//! buffers for upload data, which is written with O_DIRECT (see `store::appender`).
//!
//! Aligned buffers are pooled per worker. A new allocation of a few MiB is fresh memory whose
//! first touch costs a page fault per page; in the VMs this registry is measured on, where the
//! host takes idle memory back, those faults dominated the time of an upload.

use monoio::buf::{IoBuf, IoBufMut};
use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;

/// Alignment of O_DIRECT memory, file offsets and lengths: the page size, which covers every
/// logical block size in use (512 and 4096).
pub const ALIGN: usize = 4096;

/// Size of the pooled upload buffers.
pub const UPLOAD_BUF: usize = 1024 * 1024;

/// Buffers kept per worker for reuse; more are allocated while more uploads run at once.
const POOL_MAX: usize = 16;

/// A buffer bytes can be appended to, by copy or by a read straight into its spare room.
pub trait FillBuf: IoBuf + IoBufMut {
    /// A buffer with no room, standing in for one lost to a cancelled read.
    fn empty() -> Self;
    fn filled(&self) -> usize;
    fn room(&self) -> usize;
    fn extend_from_slice(&mut self, bytes: &[u8]);
}

impl FillBuf for Vec<u8> {
    fn empty() -> Self {
        Vec::new()
    }

    fn filled(&self) -> usize {
        self.len()
    }

    fn room(&self) -> usize {
        self.capacity() - self.len()
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        Vec::extend_from_slice(self, bytes)
    }
}

/// A fixed-capacity buffer whose start is aligned to [`ALIGN`].
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    cap: usize,
    len: usize,
}

impl AlignedBuf {
    /// `cap` is rounded up to a multiple of [`ALIGN`].
    pub fn new(cap: usize) -> AlignedBuf {
        let cap = cap.max(ALIGN).div_ceil(ALIGN) * ALIGN;
        let layout = Layout::from_size_align(cap, ALIGN).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { alloc::alloc(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, cap, len: 0 }
    }

    /// A cleared buffer of [`UPLOAD_BUF`] bytes from this worker's pool.
    pub fn take() -> AlignedBuf {
        POOL.with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| AlignedBuf::new(UPLOAD_BUF))
    }

    /// Returns a buffer to this worker's pool.
    pub fn give(mut self) {
        if self.cap != UPLOAD_BUF {
            return;
        }
        self.len = 0;
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(self);
            }
        });
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `len` bytes are initialized (set by copies or completed reads).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.cap == 0 {
            return;
        }
        let layout = Layout::from_size_align(self.cap, ALIGN).expect("valid layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

thread_local! {
    static POOL: RefCell<Vec<AlignedBuf>> = const { RefCell::new(Vec::new()) };
}

// SAFETY: the pointer is valid for `cap` bytes for the life of the value, which io_uring holds
// by ownership while an operation is in flight.
// SAFETY: an AlignedBuf owns its allocation alone (no aliases, no thread-local state inside
// it), so moving it to another thread is moving a Box; uploads send full buffers to the
// hashing pool and get them back.
unsafe impl Send for AlignedBuf {}

unsafe impl IoBuf for AlignedBuf {
    fn read_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len
    }
}

// SAFETY: as above; `set_init` is called by monoio only with positions the kernel filled.
unsafe impl IoBufMut for AlignedBuf {
    fn write_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    fn bytes_total(&mut self) -> usize {
        self.cap
    }

    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len {
            self.len = pos.min(self.cap);
        }
    }
}

impl FillBuf for AlignedBuf {
    fn empty() -> Self {
        AlignedBuf {
            ptr: NonNull::dangling(),
            cap: 0,
            len: 0,
        }
    }

    fn filled(&self) -> usize {
        self.len
    }

    fn room(&self) -> usize {
        self.cap - self.len
    }

    fn extend_from_slice(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.room());
        // SAFETY: `n` bytes fit after `len`; source and destination cannot overlap (we own
        // the destination exclusively).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(self.len), n)
        };
        self.len += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_appendable() {
        let mut b = AlignedBuf::new(5000);
        assert_eq!(b.capacity(), 8192);
        assert_eq!(b.read_ptr() as usize % ALIGN, 0);
        b.extend_from_slice(b"hello");
        assert_eq!(b.as_slice(), b"hello");
        assert_eq!(b.room(), 8192 - 5);
        b.extend_from_slice(&vec![7u8; 10_000]);
        assert_eq!(b.len(), 8192, "extend stops at capacity");
        b.clear();
        assert!(b.is_empty());
    }

    #[test]
    fn pool_reuses_upload_buffers() {
        let a = AlignedBuf::take();
        let p = a.read_ptr();
        a.give();
        let mut b = AlignedBuf::take();
        assert_eq!(b.read_ptr(), p);
        assert!(b.is_empty());
        assert_eq!(b.bytes_total(), UPLOAD_BUF);
        b.give();
    }
}
