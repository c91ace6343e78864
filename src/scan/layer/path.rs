//! Archive paths made relative to the image root, and the OCI whiteout names: pure
//! functions, so that every hostile spelling is tested without building an archive.

use super::LayerError;

/// The archive path `raw` relative to the image root: leading `/` and `./`, empty and `.`
/// components dropped, `..` applied lexically (as an extractor cleaning the path would).
/// `None` is the root itself (`./`), which names nothing to add.
pub(crate) fn normalize(raw: &[u8], max_path: usize) -> Result<Option<String>, LayerError> {
    let text = checked_text(raw, max_path)?;
    let mut parts: Vec<&str> = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(LayerError::PathEscapes {
                        path: text.into_owned(),
                    });
                }
            }
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.join("/")))
}

/// `raw` as text after its length is checked. Names that are not UTF-8 are read lossily:
/// the package databases and metadata detectors look for are UTF-8 names, and a replaced
/// byte can never make a name equal to one of those.
pub(crate) fn checked_text(
    raw: &[u8],
    max_path: usize,
) -> Result<std::borrow::Cow<'_, str>, LayerError> {
    let text = String::from_utf8_lossy(raw);
    if raw.len() > max_path {
        return Err(LayerError::PathTooLong {
            start: text.chars().take(100).collect(),
            len: raw.len(),
            limit: max_path,
        });
    }
    Ok(text)
}

/// Whether a symbolic link at the normalized `path` with a relative `target` climbs above
/// the root (`a/b -> ../../../etc`). Absolute targets are how images point at their own
/// files (`/usr/bin/python3`) and are resolved from the root, so they never escape.
pub(crate) fn relative_target_escapes(path: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    // The link's directory is as deep as the path has separators.
    let mut depth = path.matches('/').count();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

/// What an entry's name means under the OCI image spec's whiteout rules.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Whiteout<'a> {
    /// Not a whiteout: an ordinary entry.
    None,
    /// `dir/.wh.name`: `dir/name` of lower layers is removed.
    Remove { victim: String },
    /// `dir/.wh..wh..opq`: everything of lower layers below `dir` is hidden.
    Opaque { dir: &'a str },
    /// Another `.wh..wh.` name (AUFS bookkeeping): never part of the view.
    Internal,
}

const PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Classifies a normalized path by its last component.
pub(crate) fn whiteout(path: &str) -> Result<Whiteout<'_>, LayerError> {
    let (dir, name) = match path.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", path),
    };
    if name == OPAQUE {
        return Ok(Whiteout::Opaque { dir });
    }
    if name.starts_with(".wh..wh.") {
        return Ok(Whiteout::Internal);
    }
    let Some(victim) = name.strip_prefix(PREFIX) else {
        return Ok(Whiteout::None);
    };
    if victim.is_empty() || victim == "." || victim == ".." {
        return Err(LayerError::Corrupt {
            reason: format!("whiteout `{path}` names no file"),
        });
    }
    let victim = if dir.is_empty() {
        victim.to_string()
    } else {
        format!("{dir}/{victim}")
    };
    Ok(Whiteout::Remove { victim })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(raw: &str) -> Result<Option<String>, String> {
        normalize(raw.as_bytes(), 4096).map_err(|e| e.to_string())
    }

    #[test]
    fn normalize_strips_root_and_dots() {
        assert_eq!(norm("./etc/os-release"), Ok(Some("etc/os-release".into())));
        assert_eq!(norm("/usr//lib/./x/"), Ok(Some("usr/lib/x".into())));
        assert_eq!(norm("a/b/../c"), Ok(Some("a/c".into())));
        assert_eq!(norm("./"), Ok(None));
        assert_eq!(norm(""), Ok(None));
        assert_eq!(norm("a/.."), Ok(None));
    }

    #[test]
    fn normalize_refuses_climbing_out() {
        let escape = |p: &str| Err(format!("layer entry `{p}` climbs out of the image root"));
        assert_eq!(norm("../../etc/passwd"), escape("../../etc/passwd"));
        assert_eq!(norm("/../etc/passwd"), escape("/../etc/passwd"));
        assert_eq!(norm("a/../../x"), escape("a/../../x"));
        assert_eq!(norm("./.."), escape("./.."));
    }

    #[test]
    fn normalize_refuses_long_paths() {
        let long = "a/".repeat(60);
        match normalize(long.as_bytes(), 100) {
            Err(LayerError::PathTooLong { start, len, limit }) => {
                assert_eq!((start.len(), len, limit), (100, 120, 100));
            }
            other => panic!("expected PathTooLong, got {other:?}"),
        }
        assert_eq!(
            normalize(long.as_bytes(), 120)
                .ok()
                .flatten()
                .map(|p| p.len()),
            Some(119)
        );
    }

    #[test]
    fn normalize_reads_non_utf8_lossily() {
        assert_eq!(
            normalize(b"usr/\xff/x", 4096).ok().flatten().as_deref(),
            Some("usr/\u{fffd}/x")
        );
    }

    #[test]
    fn relative_targets_that_climb_out_are_found() {
        assert!(relative_target_escapes("a/b", "../../../etc"));
        assert!(relative_target_escapes("x", ".."));
        assert!(relative_target_escapes("a/b", "c/../../../d"));
        assert!(!relative_target_escapes(
            "etc/os-release",
            "../usr/lib/os-release"
        ));
        assert!(!relative_target_escapes("a/b/c", "../../x"));
        assert!(!relative_target_escapes("x", "/../../etc"));
        assert!(!relative_target_escapes("x", "./y"));
    }

    fn wh(path: &str) -> String {
        match whiteout(path) {
            Ok(Whiteout::None) => "none".into(),
            Ok(Whiteout::Remove { victim }) => format!("remove {victim}"),
            Ok(Whiteout::Opaque { dir }) => format!("opaque {dir}"),
            Ok(Whiteout::Internal) => "internal".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(wh("etc/passwd"), "none");
        assert_eq!(wh("etc/.whx"), "none");
        assert_eq!(wh("etc/.wh.passwd"), "remove etc/passwd");
        assert_eq!(wh(".wh.etc"), "remove etc");
        assert_eq!(wh("var/cache/.wh..wh..opq"), "opaque var/cache");
        assert_eq!(wh(".wh..wh..opq"), "opaque ");
        assert_eq!(wh("a/.wh..wh.plnk"), "internal");
        assert_eq!(
            wh("a/.wh.."),
            "layer is corrupt: whiteout `a/.wh..` names no file"
        );
        assert_eq!(
            wh("a/.wh."),
            "layer is corrupt: whiteout `a/.wh.` names no file"
        );
    }
}
