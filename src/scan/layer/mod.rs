//! Layers read in order as tar streams into one view of the image's files.

pub mod keep;

pub use keep::{FileHead, Keeper};
