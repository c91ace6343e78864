//! Why a layer was refused, in terms a user can act on.

use std::fmt;
use std::io;

/// A layer the reader refuses. The view is left partly applied: the scan of that image
/// stops. The caller knows which layer it passed and names it (index or digest).
#[derive(Debug)]
pub enum LayerError {
    /// An entry's path climbs above the image root with `..`.
    PathEscapes { path: String },
    /// An entry's path or a link's target is longer than [`Limits::max_path`].
    ///
    /// [`Limits::max_path`]: super::Limits::max_path
    PathTooLong {
        /// The path's first 100 characters: enough to find it, not a megabyte of message.
        start: String,
        len: usize,
        limit: usize,
    },
    /// An entry would be written below a symbolic link (`link/passwd` where `link -> /etc`),
    /// the classic way out of an extraction root.
    ThroughSymlink { path: String, link: String },
    /// A symbolic link whose relative target climbs above the image root.
    SymlinkEscapes { path: String, target: String },
    /// The layers expand to more bytes than [`Limits::max_expanded`].
    ///
    /// [`Limits::max_expanded`]: super::Limits::max_expanded
    TooLarge { limit: u64 },
    /// The layers hold more entries than [`Limits::max_entries`].
    ///
    /// [`Limits::max_entries`]: super::Limits::max_entries
    TooManyEntries { limit: u64 },
    /// The view's paths would take more memory than [`Limits::max_view`].
    ///
    /// [`Limits::max_view`]: super::Limits::max_view
    ViewTooLarge { limit: u64 },
    /// A hard link names a path that no earlier entry created (or a directory).
    HardLinkMissing { path: String, target: String },
    /// The stream ends before the archive does.
    Truncated { reason: String },
    /// The stream is not a valid gzip, zstd or tar stream, or an entry makes no sense.
    Corrupt { reason: String },
    /// The layer blob's own reader failed (disk or network): the layer may be fine.
    Read { source: io::Error },
    /// The keeper refused a file (its own limit), or failed reading it.
    Keeper { path: String, source: io::Error },
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerError::PathEscapes { path } => {
                write!(f, "layer entry `{path}` climbs out of the image root")
            }
            LayerError::PathTooLong { start, len, limit } => write!(
                f,
                "layer entry `{start}…` has a path of {len} bytes, longer than {limit} (scan.max_path)"
            ),
            LayerError::ThroughSymlink { path, link } => write!(
                f,
                "layer entry `{path}` would be written through the symbolic link `{link}`"
            ),
            LayerError::SymlinkEscapes { path, target } => write!(
                f,
                "symbolic link `{path}` -> `{target}` climbs out of the image root"
            ),
            LayerError::TooLarge { limit } => write!(
                f,
                "layers expand beyond {} (scan.max_expanded)",
                human_bytes(*limit)
            ),
            LayerError::TooManyEntries { limit } => {
                write!(f, "layers hold more than {limit} entries (scan.max_entries)")
            }
            LayerError::ViewTooLarge { limit } => write!(
                f,
                "the image's file names take more than {} of memory (scan.max_view)",
                human_bytes(*limit)
            ),
            LayerError::HardLinkMissing { path, target } => write!(
                f,
                "hard link `{path}` names `{target}`, which is not a file an earlier entry created"
            ),
            LayerError::Truncated { reason } => write!(f, "layer ends early: {reason}"),
            LayerError::Corrupt { reason } => write!(f, "layer is corrupt: {reason}"),
            LayerError::Read { source } => write!(f, "reading the layer blob failed: {source}"),
            LayerError::Keeper { path, source } => write!(f, "reading `{path}`: {source}"),
        }
    }
}

impl std::error::Error for LayerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LayerError::Keeper { source, .. } | LayerError::Read { source } => Some(source),
            _ => None,
        }
    }
}

/// `16.0 GiB`, `512 bytes`: limits are set in round binary units, so show them that way.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (unit, shift) in UNITS {
        if n >= 1u64 << shift {
            return format!("{:.1} {unit}", n as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_uses_binary_units() {
        assert_eq!(human_bytes(16 << 30), "16.0 GiB");
        assert_eq!(human_bytes(16 << 20), "16.0 MiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(3 << 40), "3.0 TiB");
    }

    #[test]
    fn messages_name_the_setting() {
        let e = LayerError::TooLarge { limit: 16 << 30 };
        assert_eq!(
            e.to_string(),
            "layers expand beyond 16.0 GiB (scan.max_expanded)"
        );
        let e = LayerError::PathEscapes {
            path: "../../etc/passwd".into(),
        };
        assert_eq!(
            e.to_string(),
            "layer entry `../../etc/passwd` climbs out of the image root"
        );
    }
}
