//! Media types the registry has to recognise, and how to compare them.
//!
//! Clients are inconsistent about the exact spelling of a `Content-Type` (parameters such as
//! `charset`, stray spaces, capitalised types), so comparison works on the essence: the part
//! before any `;`, trimmed and lowercased. The registry always stores and serves the canonical
//! constants below, never the client's spelling.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const OCI_EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";

/// Whether a manifest lists blobs (an image) or other manifests (an index); the two are
/// validated, stored and garbage-collected differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManifestKind {
    Image,
    Index,
}

/// The four manifest media types the registry accepts, in the form it stores and serves.
pub const KNOWN_MANIFEST_TYPES: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

/// The part of a media type that identifies it: parameters dropped, whitespace trimmed,
/// lowercased (RFC 6838 type and subtype names are case-insensitive).
pub fn essence(media_type: &str) -> String {
    let base = match media_type.split_once(';') {
        Some((base, _params)) => base,
        None => media_type,
    };
    base.trim().to_ascii_lowercase()
}

/// True when both name the same type, whatever their parameters or capitalisation.
pub fn same_type(a: &str, b: &str) -> bool {
    essence(a) == essence(b)
}

/// Maps any spelling of a known manifest type to its canonical constant, so callers can store
/// a `&'static str` and never echo client-supplied bytes into a response header.
pub fn canonical_manifest_type(media_type: &str) -> Option<&'static str> {
    let e = essence(media_type);
    KNOWN_MANIFEST_TYPES.into_iter().find(|known| *known == e)
}

pub fn manifest_kind(media_type: &str) -> Option<ManifestKind> {
    match canonical_manifest_type(media_type)? {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(ManifestKind::Image),
        _ => Some(ManifestKind::Index),
    }
}

/// Schema 1 gets its own check so the rejection can say "unsupported" rather than "unknown".
pub fn is_schema1(media_type: &str) -> bool {
    let e = essence(media_type);
    e == DOCKER_SCHEMA1 || e == DOCKER_SCHEMA1_SIGNED
}

/// RFC 6838 §4.2 `restricted-name`: 1 to 127 characters, first alphanumeric.
fn is_restricted_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            first.is_ascii_alphanumeric()
                && bytes.len() <= 127
                && rest.iter().all(|&b| {
                    b.is_ascii_alphanumeric()
                        || matches!(
                            b,
                            b'!' | b'#' | b'$' | b'&' | b'-' | b'^' | b'_' | b'.' | b'+'
                        )
                })
        }
        None => false,
    }
}

/// Whether `s` is a well-formed `type/subtype[;params]` as the image spec requires of
/// descriptor media types. Descriptors' types are copied into referrers responses, so this also
/// keeps control characters and other junk out of what the registry later serves. Parameters
/// are only required to be visible ASCII; their inner grammar is not the registry's concern.
pub fn is_valid_media_type(s: &str) -> bool {
    let (base, params) = match s.split_once(';') {
        Some((base, params)) => (base, Some(params)),
        None => (s, None),
    };
    let Some((ty, subtype)) = base.trim_end().split_once('/') else {
        return false;
    };
    is_restricted_name(ty)
        && is_restricted_name(subtype)
        && params.is_none_or(|p| {
            p.bytes()
                .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_types_map_to_kinds() {
        assert_eq!(manifest_kind(OCI_MANIFEST), Some(ManifestKind::Image));
        assert_eq!(manifest_kind(DOCKER_MANIFEST), Some(ManifestKind::Image));
        assert_eq!(manifest_kind(OCI_INDEX), Some(ManifestKind::Index));
        assert_eq!(
            manifest_kind(DOCKER_MANIFEST_LIST),
            Some(ManifestKind::Index)
        );
    }

    #[test]
    fn unknown_and_schema1_have_no_kind() {
        for mt in [
            "",
            ";",
            "application/json",
            "application/octet-stream",
            DOCKER_SCHEMA1,
            DOCKER_SCHEMA1_SIGNED,
            OCI_EMPTY_CONFIG,
            "application/vnd.oci.image.manifest.v1+json+extra",
            "application/vnd.oci.image.manifest.v1",
            "xapplication/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.manifest.v1+json\0",
            "application/vnd.oci.image.manifest.v1+jsön",
        ] {
            assert_eq!(manifest_kind(mt), None, "{mt:?}");
        }
    }

    #[test]
    fn comparison_ignores_params_whitespace_and_case() {
        for mt in [
            "application/vnd.oci.image.manifest.v1+json; charset=utf-8",
            "  application/vnd.oci.image.manifest.v1+json  ",
            "Application/VND.OCI.Image.Manifest.v1+JSON",
            "application/vnd.oci.image.manifest.v1+json;",
            "\tapplication/vnd.oci.image.manifest.v1+json ;q=1;x=y",
        ] {
            assert_eq!(canonical_manifest_type(mt), Some(OCI_MANIFEST), "{mt:?}");
            assert_eq!(manifest_kind(mt), Some(ManifestKind::Image));
            assert!(same_type(mt, OCI_MANIFEST));
        }
        assert!(!same_type(OCI_MANIFEST, OCI_INDEX));
        assert!(is_schema1(
            "application/vnd.docker.distribution.manifest.v1+prettyjws; x=1"
        ));
        assert!(is_schema1(
            " APPLICATION/vnd.docker.distribution.manifest.v1+json"
        ));
        assert!(!is_schema1(DOCKER_MANIFEST));
    }

    #[test]
    fn essence_handles_hostile_input() {
        assert_eq!(essence(""), "");
        assert_eq!(essence(";;;"), "");
        assert_eq!(essence("ÄÖ/Ü;x"), "ÄÖ/Ü");
        let long = "a".repeat(1_000_000);
        assert_eq!(essence(&long).len(), 1_000_000);
        assert_eq!(manifest_kind(&long), None);
    }

    #[test]
    fn media_type_grammar() {
        for ok in [
            OCI_MANIFEST,
            OCI_EMPTY_CONFIG,
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "text/plain; charset=utf-8",
            "application/vnd.example.sbom.v1",
            "a/b",
        ] {
            assert!(is_valid_media_type(ok), "{ok}");
        }
        for bad in [
            "",
            "/",
            "a/",
            "/b",
            "a",
            "a/b/c",
            "a /b",
            " a/b",
            ".a/b",
            "a/-b",
            "a/b\r\nX-Injected: 1",
            "a/b;\r\n",
            "a/b\0",
            "é/b",
        ] {
            assert!(!is_valid_media_type(bad), "{bad:?}");
        }
        assert!(is_valid_media_type(&format!("a/{}", "b".repeat(127))));
        assert!(!is_valid_media_type(&format!("a/{}", "b".repeat(128))));
    }
}
