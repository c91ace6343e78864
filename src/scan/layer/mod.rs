//! Layers read in order as tar streams into one view of the image's files.
//!
//! - [`keep`]: what the reader keeps of each regular file, decided by the detectors.
//! - [`View`]: the files after each layer is applied (gzip, zstd or plain tar, told by
//!   magic), whiteouts and replacements done, symbolic links followed on lookup.
//! - [`Limits`] and [`LayerError`]: what a hostile layer is refused with: decompression
//!   bombs, paths climbing out of the root, writes through symbolic links, truncation,
//!   and views whose paths alone would exhaust memory.

mod decompress;
mod error;
pub mod keep;
mod limits;
mod path;
mod view;

#[cfg(test)]
mod tests;

pub use error::LayerError;
pub use keep::{FileHead, Keeper};
pub use limits::Limits;
pub use view::{Node, View};
