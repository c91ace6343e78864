//! Bounds on what one image's layers may cost, so that a hostile image fails with a clear
//! error instead of exhausting memory, disk or time.

/// Limits for one image, counted across all of its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Uncompressed bytes of all layers (tar headers, padding and every body, kept or not;
    /// a plain layer's unread bodies passed over count too): a gzip or zstd bomb stops here.
    pub max_expanded: u64,
    /// Tar entries across all layers: each one costs a path in the view.
    pub max_entries: u64,
    /// Bytes in an entry's path or a symbolic link's target.
    pub max_path: usize,
    /// Approximate bytes the view's paths take (each node counts its path, its link
    /// target and 64 bytes of overhead, as it is added): paths are held whole, so without
    /// this bound a few MiB of compressed deep paths (`a/a/a/…`, each directory a node)
    /// would take gigabytes. Real images take a few hundred bytes a file.
    pub max_view: u64,
    /// Symbolic links followed while resolving one path (Linux stops at 40 too).
    pub max_symlink_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_expanded: 16 << 30,
            max_entries: 2_000_000,
            max_path: 4096,
            max_view: 512 << 20,
            max_symlink_depth: 40,
        }
    }
}
