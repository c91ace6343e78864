//! What the layer reader keeps of each regular file: the reader knows tar, not packages, so
//! a [`Keeper`] (the package detectors) decides per file whether to keep nothing, its bytes,
//! or what it learned from reading them (a binary's embedded build information), so that
//! memory holds only what detection needs, never a whole layer.

use std::io::{self, Read};

/// A regular file as the layer presents it, before its body is read.
#[derive(Debug, Clone, Copy)]
pub struct FileHead<'a> {
    /// Normalized: relative to the image root, no leading `/`, no `.` or `..` components,
    /// no trailing `/` (`usr/lib/os-release`).
    pub path: &'a str,
    /// The body's length in bytes, as the tar header declares it.
    pub size: u64,
    /// Permission bits from the tar header (`0o755`).
    pub mode: u32,
}

/// Decides, per regular file, what the view keeps of it.
pub trait Keeper {
    /// What is kept of a file. Cloned when a hard link names a kept file again.
    type Kept: Clone;

    /// Called for every regular file of every layer, in layer order; `body` yields at most
    /// `head.size` bytes and may be left unread (the reader skips what remains). None keeps
    /// nothing (a later whiteout or replacement still applies to the path). An error stops
    /// the scan: it is the detector's own refusal (a file it cannot bound), reported with
    /// the path.
    fn keep(&mut self, head: FileHead<'_>, body: &mut dyn Read) -> io::Result<Option<Self::Kept>>;
}
