//! Layers built at test time (the `tar` crate's builder, raw headers for what it refuses to
//! write, and the system's `tar`, `gzip` and `zstd` where installed), applied to a view.

use std::io::{self, Read, Write};
use std::process::{Command, Stdio};

use std::sync::Arc;

use super::{FileHead, Keeper, LayerError, Limits, Node, View};

/// Keeps the bytes of every file whose path the predicate accepts.
struct Grab<F: FnMut(&str) -> bool>(F);

impl<F: FnMut(&str) -> bool> Keeper for Grab<F> {
    type Kept = Vec<u8>;

    fn keep(&mut self, head: FileHead<'_>, body: &mut dyn Read) -> io::Result<Option<Vec<u8>>> {
        if !(self.0)(head.path) {
            return Ok(None);
        }
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)?;
        assert_eq!(bytes.len() as u64, head.size);
        Ok(Some(bytes))
    }
}

fn all() -> Grab<impl FnMut(&str) -> bool> {
    Grab(|_: &str| true)
}

/// One tar entry, named exactly as given (no cleaning: hostile names are the point).
enum E<'a> {
    F(&'a str, &'a [u8]),
    D(&'a str),
    Sym(&'a str, &'a str),
    Hard(&'a str, &'a str),
    Char(&'a str),
}

fn raw_name(field: &mut [u8], name: &str) {
    field.fill(0);
    field[..name.len()].copy_from_slice(name.as_bytes());
}

fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    raw_name(&mut h.as_old_mut().name, name);
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h
}

fn tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match *e {
            E::F(name, data) => {
                let h = header(name, tar::EntryType::Regular, data.len() as u64);
                b.append(&h, data).unwrap();
            }
            E::D(name) => b
                .append(&header(name, tar::EntryType::Directory, 0), io::empty())
                .unwrap(),
            E::Char(name) => b
                .append(&header(name, tar::EntryType::Char, 0), io::empty())
                .unwrap(),
            E::Sym(name, target) | E::Hard(name, target) => {
                let kind = match e {
                    E::Sym(..) => tar::EntryType::Symlink,
                    _ => tar::EntryType::Link,
                };
                let mut h = header(name, kind, 0);
                raw_name(&mut h.as_old_mut().linkname, target);
                h.set_cksum();
                b.append(&h, io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn view(layers: &[Vec<u8>]) -> Result<View<Vec<u8>>, LayerError> {
    view_with(layers, Limits::default())
}

fn view_with(layers: &[Vec<u8>], limits: Limits) -> Result<View<Vec<u8>>, LayerError> {
    let mut v = View::new(limits);
    for layer in layers {
        v.apply(io::Cursor::new(&layer[..]), &mut all())?;
    }
    Ok(v)
}

fn text(v: &View<Vec<u8>>, path: &str) -> Option<String> {
    v.kept(path)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn err(r: Result<View<Vec<u8>>, LayerError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {:?}", v.listing()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_later_layer_replaces_a_file() {
    let v = view(&[
        tar(&[E::F("etc/os-release", b"old"), E::F("usr/bin/a", b"x")]),
        gzip(&tar(&[E::F("./etc/os-release", b"new")])),
    ])
    .unwrap();
    assert_eq!(text(&v, "etc/os-release").as_deref(), Some("new"));
    assert_eq!(
        v.listing(),
        [
            "d etc",
            "f etc/os-release",
            "d usr",
            "d usr/bin",
            "f usr/bin/a"
        ]
    );
    let files: Vec<_> = v.files().map(|(p, k)| (p, k.as_slice())).collect();
    assert_eq!(
        files,
        [("etc/os-release", &b"new"[..]), ("usr/bin/a", &b"x"[..])]
    );
}

#[test]
fn unkept_files_are_in_the_view_without_a_value() {
    let mut v = View::new(Limits::default());
    let layer = tar(&[E::F("a", b"1"), E::F("b", b"2")]);
    v.apply(io::Cursor::new(&layer[..]), &mut Grab(|p: &str| p == "b"))
        .unwrap();
    assert_eq!(v.listing(), ["- a", "f b"]);
    assert_eq!(v.kept("a"), None);
    assert_eq!(v.kept("b").map(Vec::as_slice), Some(&b"2"[..]));
}

#[test]
fn whiteouts_remove_a_file_and_a_tree() {
    let v = view(&[
        tar(&[
            E::D("a"),
            E::F("a/b/c", b"1"),
            E::F("a/d", b"2"),
            E::F("keep", b"3"),
            E::F("x", b"4"),
            E::F("ab", b"5"),
        ]),
        tar(&[
            E::F(".wh.x", b""),
            E::F("./.wh.a", b""),
            E::F("gone/.wh.y", b""),
        ]),
    ])
    .unwrap();
    assert_eq!(v.listing(), ["f ab", "f keep"]);
    assert_eq!(text(&v, "a/d"), None);
}

#[test]
fn whiteouts_spare_entries_of_their_own_layer() {
    for upper in [
        tar(&[E::F("a", b"2"), E::F(".wh.a", b"")]),
        tar(&[E::F(".wh.a", b""), E::F("a", b"2")]),
    ] {
        let v = view(&[tar(&[E::F("a", b"1")]), upper]).unwrap();
        assert_eq!(v.listing(), ["f a"]);
        assert_eq!(text(&v, "a").as_deref(), Some("2"));
    }
    // A directory of the upper layer keeps its own entries, not the lower layer's.
    let v = view(&[
        tar(&[E::F("d/old", b"1")]),
        tar(&[E::F("d/new", b"2"), E::F(".wh.d", b"")]),
    ])
    .unwrap();
    assert_eq!(v.listing(), ["d d", "f d/new"]);
}

#[test]
fn opaque_directories_hide_lower_layers_only() {
    let v = view(&[
        tar(&[
            E::F("d/old", b"1"),
            E::F("d/sub/x", b"2"),
            E::F("d/sub/y", b"3"),
            E::F("e/y", b"4"),
            E::F("d2", b"5"),
        ]),
        tar(&[
            E::F("d/new1", b"6"),
            E::F("d/sub/z", b"7"),
            E::F("d/.wh..wh..opq", b""),
            E::F("d/new2", b"8"),
        ]),
    ])
    .unwrap();
    assert_eq!(
        v.listing(),
        [
            "d d",
            "f d/new1",
            "f d/new2",
            "d d/sub",
            "f d/sub/z",
            "f d2",
            "d e",
            "f e/y"
        ]
    );
    // A marker for a directory a lower layer had as a file makes it a directory.
    let v = view(&[tar(&[E::F("d", b"1")]), tar(&[E::F("d/.wh..wh..opq", b"")])]).unwrap();
    assert_eq!(v.listing(), ["d d"]);
}

#[test]
fn a_replacement_of_another_kind_removes_what_was_below() {
    let l1 = tar(&[E::F("a", b"1"), E::F("p", b"x")]);
    let l2 = tar(&[E::D("a"), E::F("a/b", b"2"), E::F("p/q", b"y")]);
    let v = view(&[l1.clone(), l2.clone()]).unwrap();
    assert_eq!(v.listing(), ["d a", "f a/b", "d p", "f p/q"]);

    let l3 = tar(&[E::Sym("a", "p"), E::F("p", b"z")]);
    let v = view(&[l1.clone(), l2.clone(), l3.clone()]).unwrap();
    assert_eq!(v.listing(), ["l a -> p", "f p"]);
    assert_eq!(text(&v, "a").as_deref(), Some("z"));

    let l4 = tar(&[E::F("a", b"3"), E::D("p")]);
    let v = view(&[l1, l2, l3, l4]).unwrap();
    assert_eq!(v.listing(), ["f a", "d p"]);
}

#[test]
fn devices_and_fifos_are_not_in_the_view_but_replace() {
    let v = view(&[
        tar(&[E::F("dev/x", b"1")]),
        tar(&[E::Char("dev/x"), E::Char("dev/null")]),
    ])
    .unwrap();
    assert_eq!(v.listing(), ["d dev"]);
}

#[test]
fn hard_links_copy_what_was_kept() {
    let v = view(&[
        tar(&[E::F("bin/a", b"A")]),
        tar(&[E::Hard("bin/b", "bin/a"), E::Hard("c", "/bin/b")]),
    ])
    .unwrap();
    assert_eq!(v.listing(), ["d bin", "f bin/a", "f bin/b", "f c"]);
    assert_eq!(text(&v, "bin/b").as_deref(), Some("A"));
    assert_eq!(text(&v, "c").as_deref(), Some("A"));
    // The links share what was kept rather than copying it.
    match (v.get("bin/a"), v.get("c")) {
        (Some(Node::File(Some(a))), Some(Node::File(Some(c)))) => assert!(Arc::ptr_eq(a, c)),
        other => panic!("{other:?}"),
    }

    assert_eq!(
        err(view(&[tar(&[E::Hard("b", "nowhere")])])),
        "hard link `b` names `nowhere`, which is not a file an earlier entry created"
    );
    assert_eq!(
        err(view(&[tar(&[E::D("d"), E::Hard("b", "d")])])),
        "hard link `b` names `d`, which is not a file an earlier entry created"
    );
    assert_eq!(
        err(view(&[tar(&[E::Hard("b", "../etc/shadow")])])),
        "layer entry `../etc/shadow` climbs out of the image root"
    );
}

#[test]
fn kept_follows_symbolic_links() {
    let mut entries = vec![
        E::F("usr/lib/os-release", b"ID=debian"),
        E::Sym("etc/os-release", "../usr/lib/os-release"),
        E::Sym("lib", "usr/lib"),
        E::Sym("abs", "/usr/lib/os-release"),
        E::Sym("clamped", "/../../usr/lib/os-release"),
        E::Sym("via", "lib/os-release"),
        E::Sym("deep/er/link", "../../lib/../lib/os-release"),
        E::Sym("dirlink", "/lib"),
        E::Sym("loop1", "loop2"),
        E::Sym("loop2", "loop1"),
        E::Sym("dangling", "missing"),
        E::Sym("chain0", "usr/lib/os-release"),
    ];
    let names: Vec<String> = (1..=41).map(|i| format!("chain{i}")).collect();
    let targets: Vec<String> = (0..41).map(|i| format!("chain{i}")).collect();
    for (name, target) in names.iter().zip(&targets) {
        entries.push(E::Sym(name, target));
    }
    let v = view(&[tar(&entries)]).unwrap();
    let os = Some("ID=debian".to_string());
    for path in [
        "usr/lib/os-release",
        "etc/os-release",
        "/etc/os-release",
        "lib/os-release",
        "abs",
        "clamped",
        "via",
        "deep/er/link",
        "dirlink/os-release",
        "etc/../dirlink/./os-release",
        "../../etc/os-release",
        "chain39",
    ] {
        assert_eq!(text(&v, path), os, "{path}");
    }
    // chain40 takes 41 links; loops never end; a directory is no file.
    for path in [
        "chain40",
        "chain41",
        "loop1",
        "dangling",
        "usr/lib",
        "lib",
        "etc/os-release/x",
    ] {
        assert_eq!(text(&v, path), None, "{path}");
    }
    let files: Vec<_> = v.files().map(|(p, _)| p).collect();
    assert_eq!(files, ["usr/lib/os-release"]);
}

#[test]
fn the_symlink_depth_limit_is_the_configured_one() {
    let v = view_with(
        &[tar(&[E::F("f", b"1"), E::Sym("a", "f"), E::Sym("b", "a")])],
        Limits {
            max_symlink_depth: 1,
            ..Limits::default()
        },
    )
    .unwrap();
    assert_eq!(text(&v, "a").as_deref(), Some("1"));
    assert_eq!(text(&v, "b"), None);
}

#[test]
fn paths_that_climb_out_are_refused() {
    assert_eq!(
        err(view(&[tar(&[E::F("../etc/passwd", b"x")])])),
        "layer entry `../etc/passwd` climbs out of the image root"
    );
    assert_eq!(
        err(view(&[tar(&[E::F("/../etc/passwd", b"x")])])),
        "layer entry `/../etc/passwd` climbs out of the image root"
    );
    assert!(matches!(
        view(&[tar(&[E::D("a/../../b")])]),
        Err(LayerError::PathEscapes { path }) if path == "a/../../b"
    ));
    // Within the root, `..` is only spelling.
    let v = view(&[tar(&[E::F("a/../b", b"x"), E::D("./"), E::D("/")])]).unwrap();
    assert_eq!(v.listing(), ["f b"]);
}

#[test]
fn writing_through_a_symbolic_link_is_refused() {
    assert_eq!(
        err(view(&[tar(&[
            E::Sym("link", "/etc"),
            E::F("link/passwd", b"x")
        ])])),
        "layer entry `link/passwd` would be written through the symbolic link `link`"
    );
    assert!(matches!(
        view(&[
            tar(&[E::Sym("a", "/")]),
            gzip(&tar(&[E::F("a/b/c", b"x")])),
        ]),
        Err(LayerError::ThroughSymlink { path, link }) if path == "a/b/c" && link == "a"
    ));
    assert!(matches!(
        view(&[tar(&[E::Sym("usr/lib", "/"), E::F("usr/lib/x/.wh..wh..opq", b"")])]),
        Err(LayerError::ThroughSymlink { link, .. }) if link == "usr/lib"
    ));
    assert!(matches!(
        view(&[tar(&[E::Sym("l", "/etc"), E::F("l/.wh.passwd", b"")])]),
        Err(LayerError::ThroughSymlink { link, .. }) if link == "l"
    ));
    // Replacing the link itself is fine.
    let v = view(&[tar(&[E::Sym("link", "/etc")]), tar(&[E::F("link", b"x")])]).unwrap();
    assert_eq!(v.listing(), ["f link"]);
}

#[test]
fn relative_symlinks_that_climb_out_are_refused() {
    assert_eq!(
        err(view(&[tar(&[E::Sym("a/b", "../../../etc")])])),
        "symbolic link `a/b` -> `../../../etc` climbs out of the image root"
    );
    assert!(matches!(
        view(&[tar(&[E::Sym("x", "..")])]),
        Err(LayerError::SymlinkEscapes { path, target }) if path == "x" && target == ".."
    ));
    let v = view(&[tar(&[
        E::Sym("a/b/c", "../../etc"),
        E::Sym("d", "/../../etc"),
    ])])
    .unwrap();
    assert_eq!(
        v.listing(),
        ["d a", "d a/b", "l a/b/c -> ../../etc", "l d -> /../../etc"]
    );
}

/// Enough layers of `n` one-MiB files of zeros, compressed to almost nothing.
fn mib_files(n: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut b = tar::Builder::new(&mut gz);
        for i in 0..n {
            let h = header(&format!("f{i}"), tar::EntryType::Regular, 1 << 20);
            b.append(&h, io::repeat(0).take(1 << 20)).unwrap();
        }
        b.finish().unwrap();
    }
    gz.finish().unwrap()
}

const MIB16: Limits = Limits {
    max_expanded: 16 << 20,
    max_entries: 2_000_000,
    max_path: 4096,
    max_view: 512 << 20,
    max_symlink_depth: 40,
};

#[test]
fn a_gzip_bomb_stops_at_the_budget() {
    let bomb = mib_files(64);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let mut v = View::new(MIB16);
    let e = v
        .apply(io::Cursor::new(&bomb[..]), &mut Grab(|_: &str| false))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "layers expand beyond 16.0 MiB (scan.max_expanded)"
    );
    assert!(matches!(e, LayerError::TooLarge { limit } if limit == 16 << 20));
    assert!(v.expanded() <= (16 << 20) + 1, "{}", v.expanded());
    assert!(v.expanded() > 15 << 20, "{}", v.expanded());
}

#[test]
fn zeros_after_the_archive_count_too() {
    // 64 MiB of zeros is an empty tar followed by padding: read to the end, all counted.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::copy(&mut io::repeat(0).take(64 << 20), &mut gz).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(matches!(
        view_with(&[bomb], MIB16),
        Err(LayerError::TooLarge { .. })
    ));
}

#[test]
fn the_budget_spans_all_layers() {
    let ten = mib_files(10);
    let mut v = View::new(MIB16);
    v.apply(io::Cursor::new(&ten[..]), &mut Grab(|_: &str| false))
        .unwrap();
    assert!(v.expanded() > 10 << 20);
    let listing = v.listing();
    assert_eq!(listing.len(), 10);
    let e = v
        .apply(io::Cursor::new(&ten[..]), &mut Grab(|_: &str| false))
        .unwrap_err();
    assert!(matches!(e, LayerError::TooLarge { .. }), "{e}");
    // What the failed layer wrote is not merged into the view.
    let other = tar(&[E::F("new", b"x")]);
    let mut chained = other.clone();
    chained.truncate(700);
    let mut v = View::new(Limits::default());
    v.apply(io::Cursor::new(&ten[..]), &mut Grab(|_: &str| false))
        .unwrap();
    assert!(v.apply(io::Cursor::new(&chained[..]), &mut all()).is_err());
    assert_eq!(v.listing(), listing);
}

#[test]
fn a_body_beyond_the_budget_fails_before_it_is_read() {
    let mut v = View::new(MIB16);
    let big = tar(&[E::F("small", b"x")]);
    v.apply(io::Cursor::new(&big[..]), &mut all()).unwrap();
    let before = v.expanded();
    let layer = [
        header("big", tar::EntryType::Regular, 64 << 20)
            .as_bytes()
            .to_vec(),
        vec![0; 4096],
    ]
    .concat();
    let e = v
        .apply(io::Cursor::new(&layer[..]), &mut all())
        .unwrap_err();
    assert!(matches!(e, LayerError::TooLarge { .. }), "{e}");
    assert_eq!(v.expanded() - before, 512);
}

#[test]
fn a_header_claiming_a_terabyte_is_refused_at_once() {
    let layer = [
        header("huge", tar::EntryType::Regular, 1 << 40)
            .as_bytes()
            .to_vec(),
        b"only a few bytes".to_vec(),
    ]
    .concat();
    assert_eq!(
        err(view(std::slice::from_ref(&layer))),
        "layers expand beyond 16.0 GiB (scan.max_expanded)"
    );
    // Without a budget to stop it, the short stream is found truncated.
    let unbounded = Limits {
        max_expanded: u64::MAX,
        ..Limits::default()
    };
    assert_eq!(
        err(view_with(&[layer], unbounded)),
        "layer ends early: tar: the stream ends inside `huge` (16 of 1099511627776 bytes)"
    );
}

#[test]
fn truncated_streams_are_refused() {
    let whole = tar(&[E::F("a", &[7; 3000]), E::F("b", b"x")]);
    // Inside a body: the keeper reads it, yet the truncation is reported as such.
    assert_eq!(
        err(view(&[whole[..1500].to_vec()])),
        "layer ends early: tar: the stream ends inside `a` (988 of 3000 bytes)"
    );
    let mut v = View::new(Limits::default());
    let e = v
        .apply(io::Cursor::new(&whole[..1500]), &mut Grab(|_: &str| false))
        .unwrap_err();
    assert!(matches!(e, LayerError::Truncated { .. }), "{e}");
    // Inside a header.
    assert_eq!(
        err(view(&[whole[..3584 + 100].to_vec()])),
        "layer ends early: tar: failed to read entire block"
    );
    // A gzip stream cut short.
    let gz = gzip(&whole);
    let e = err(view(&[gz[..gz.len() - 10].to_vec()]));
    assert!(
        e.starts_with("layer ends early: gzip-compressed tar: "),
        "{e}"
    );
    let e = err(view(&[gz[..gz.len() / 2].to_vec()]));
    assert!(
        e.starts_with("layer ends early: gzip-compressed tar: "),
        "{e}"
    );
    // Only the gzip trailer (checksum, length) is missing: the tar inside is whole.
    let e = err(view(&[gz[..gz.len() - 4].to_vec()]));
    assert!(
        e.starts_with("layer ends early: gzip-compressed tar: "),
        "{e}"
    );
    // A zstd stream cut short.
    let zst = zstd::encode_all(&whole[..], 3).unwrap();
    let e = err(view(&[zst[..zst.len() - 4].to_vec()]));
    assert!(
        e.starts_with("layer ends early: zstd-compressed tar: "),
        "{e}"
    );
}

#[test]
fn garbage_is_refused() {
    assert_eq!(
        err(view(&[vec![b'1'; 4096]])),
        "layer is corrupt: tar: archive header checksum mismatch"
    );
    // A deterministic scramble: the tar crate quotes it, the message stays short and printable.
    let garbage: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
        .collect();
    let e = err(view(std::slice::from_ref(&garbage)));
    assert!(e.starts_with("layer is corrupt: tar: numeric field"), "{e}");
    assert!(e.chars().count() < 250, "{e}");
    assert!(!e.chars().any(char::is_control), "{e}");
    let mut gz = vec![0x1f, 0x8b];
    gz.extend_from_slice(&garbage);
    let e = err(view(&[gz]));
    assert!(
        e.starts_with("layer is corrupt: gzip-compressed tar: "),
        "{e}"
    );
    let mut zst = vec![0x28, 0xb5, 0x2f, 0xfd];
    zst.extend_from_slice(&garbage);
    let e = err(view(&[zst]));
    assert!(
        e.starts_with("layer is corrupt: zstd-compressed tar: "),
        "{e}"
    );
}

#[test]
fn empty_layers_are_valid() {
    let empty_tar = tar(&[]);
    assert_eq!(empty_tar, vec![0; 1024]);
    let layers = [
        Vec::new(),
        empty_tar.clone(),
        gzip(&empty_tar),
        gzip(b""),
        zstd::encode_all(&empty_tar[..], 3).unwrap(),
    ];
    let v = view(&layers).unwrap();
    assert!(v.listing().is_empty());
}

#[test]
fn too_many_entries_are_refused() {
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let three = tar(&[E::F("a", b""), E::D("b"), E::F("c", b"")]);
    assert!(view_with(std::slice::from_ref(&three), limits).is_ok());
    assert_eq!(
        err(view_with(&[three.clone(), tar(&[E::F("d", b"")])], limits)),
        "layers hold more than 3 entries (scan.max_entries)"
    );
}

#[test]
fn long_names_are_read_and_bounded() {
    let long = format!("{}/file", "d".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(2);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, &b"hi"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "link", format!("/{long}")).unwrap();
    let layer = b.into_inner().unwrap();

    let v = view(std::slice::from_ref(&layer)).unwrap();
    assert_eq!(text(&v, &long).as_deref(), Some("hi"));
    assert_eq!(text(&v, "link").as_deref(), Some("hi"));

    let limits = Limits {
        max_path: 100,
        ..Limits::default()
    };
    let e = err(view_with(&[layer], limits));
    assert!(
        e.ends_with("` has a path of 155 bytes, longer than 100 (scan.max_path)"),
        "{e}"
    );
}

/// A tar of `n` files, each below its own chain of `depth` directories: paths of a few
/// KiB that compress to almost nothing, each directory a node of the view.
fn deep_paths(n: usize, depth: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut b = tar::Builder::new(&mut gz);
        let chain = "a/".repeat(depth);
        for i in 0..n {
            let mut h = tar::Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o644);
            b.append_data(&mut h, format!("z{i}/{chain}f"), io::empty())
                .unwrap();
        }
        b.finish().unwrap();
    }
    gz.finish().unwrap()
}

#[test]
fn deep_paths_are_bounded_by_the_views_memory() {
    let layer = deep_paths(1000, 1500);
    assert!(layer.len() < 1 << 20, "{}", layer.len());
    let started = std::time::Instant::now();
    let limits = Limits {
        max_view: 16 << 20,
        ..Limits::default()
    };
    let e = err(view_with(&[layer], limits));
    assert_eq!(
        e,
        "the image's file names take more than 16.0 MiB of memory (scan.max_view)"
    );
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());

    // A deep path alone is fine, and costs what its nodes cost: 64 bytes each and their
    // paths, `z0` (2), `z0/a` (4) … `z0/a/a/a/a/a/a/a/a` (18), `z0/a/a/a/a/a/a/a/a/f` (20).
    let cost = 10 * 64 + (2..=18).step_by(2).sum::<u64>() + 20;
    assert_eq!(cost, 750);
    let exact = Limits {
        max_view: cost,
        ..Limits::default()
    };
    let v = view_with(&[deep_paths(1, 8)], exact).unwrap();
    assert_eq!(v.listing().len(), 10);
    let tighter = Limits {
        max_view: cost - 1,
        ..exact
    };
    assert!(matches!(
        view_with(&[deep_paths(1, 8)], tighter),
        Err(LayerError::ViewTooLarge { .. })
    ));
}

#[test]
fn oversized_extension_headers_are_refused() {
    // A pax header of 2 MiB: the tar crate would hold it in memory whole.
    let mut records = Vec::new();
    while records.len() < 2 << 20 {
        records.extend_from_slice(b"20 comment=xxxxxxxx\n");
    }
    let mut b = tar::Builder::new(Vec::new());
    let h = header("pax", tar::EntryType::XHeader, records.len() as u64);
    b.append(&h, &records[..]).unwrap();
    b.append(&header("a", tar::EntryType::Regular, 1), &b"x"[..])
        .unwrap();
    let layer = gzip(&b.into_inner().unwrap());
    assert_eq!(
        err(view(&[layer])),
        "layer is corrupt: gzip-compressed tar: tar extension headers (long names, pax records) exceed 1.0 MiB"
    );
}

#[test]
fn the_keepers_refusal_names_the_file() {
    struct Refuse;
    impl Keeper for Refuse {
        type Kept = ();
        fn keep(&mut self, head: FileHead<'_>, _: &mut dyn Read) -> io::Result<Option<()>> {
            if head.path == "big" {
                return Err(io::Error::other("a package database above 64 MiB"));
            }
            Ok(None)
        }
    }
    let layer = tar(&[E::F("small", b"x"), E::F("big", b"yy")]);
    let e = View::new(Limits::default())
        .apply(io::Cursor::new(&layer[..]), &mut Refuse)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "reading `big`: a package database above 64 MiB"
    );
}

#[test]
fn the_keeper_sees_the_header() {
    struct Heads(Vec<(String, u64, u32)>);
    impl Keeper for Heads {
        type Kept = ();
        fn keep(&mut self, head: FileHead<'_>, _: &mut dyn Read) -> io::Result<Option<()>> {
            self.0.push((head.path.to_string(), head.size, head.mode));
            Ok(Some(()))
        }
    }
    let mut h = header("bin/app", tar::EntryType::Regular, 3);
    h.set_mode(0o755);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &b"abc"[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let mut heads = Heads(Vec::new());
    let mut v = View::new(Limits::default());
    v.apply(io::Cursor::new(&layer[..]), &mut heads).unwrap();
    assert_eq!(heads.0, [("bin/app".to_string(), 3, 0o755)]);
    assert_eq!(v.expanded(), 512 + 512 + 1024);
}

#[test]
fn a_failing_blob_reader_is_not_a_corrupt_layer() {
    struct Broken(usize);
    impl Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, "peer reset"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(0);
            self.0 -= n;
            Ok(n)
        }
    }
    impl io::Seek for Broken {
        fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
            // Claims more than it holds: the failure comes from reading.
            Ok(match to {
                io::SeekFrom::End(_) => 1 << 20,
                _ => 0,
            })
        }
    }
    let e = View::<Vec<u8>>::new(Limits::default())
        .apply(Broken(100), &mut all())
        .unwrap_err();
    assert!(matches!(e, LayerError::Read { .. }), "{e}");
    assert_eq!(e.to_string(), "reading the layer blob failed: peer reset");
}

/// Peak resident memory of this process, where Linux tells it.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// A plain layer generated as it is read (a header, then zeros), counting what is read.
struct Generated {
    head: Vec<u8>,
    len: u64,
    pos: u64,
    read: u64,
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.len.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let n = buf.len().min(left);
        for (i, b) in buf[..n].iter_mut().enumerate() {
            let at = self.pos as usize + i;
            *b = self.head.get(at).copied().unwrap_or(0);
        }
        self.pos += n as u64;
        self.read += n as u64;
        Ok(n)
    }
}

impl io::Seek for Generated {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            io::SeekFrom::Start(n) => n,
            io::SeekFrom::End(n) => self.len.checked_add_signed(n).unwrap_or(0),
            io::SeekFrom::Current(n) => self.pos.checked_add_signed(n).unwrap_or(0),
        };
        Ok(self.pos)
    }
}

#[test]
fn a_large_unkept_file_is_passed_over_not_held() {
    const SIZE: u64 = 1 << 30;
    // Nothing holds a gigabyte but a bug, and a plain layer's unread body is not read.
    let mut layer = Generated {
        head: header("big", tar::EntryType::Regular, SIZE)
            .as_bytes()
            .to_vec(),
        len: 512 + SIZE + 1024,
        pos: 0,
        read: 0,
    };
    let before = peak_rss();
    let mut v = View::new(Limits::default());
    v.apply(&mut layer, &mut Grab(|_: &str| false)).unwrap();
    assert_eq!(v.listing(), ["- big"]);
    assert_eq!(
        v.expanded(),
        512 + SIZE + 1024,
        "passed over is still charged"
    );
    assert!(layer.read < 1 << 20, "read {} bytes", layer.read);
    match (before, peak_rss()) {
        (Some(before), Some(after)) => {
            assert!(after < before + (256 << 20), "peak RSS {before} -> {after}")
        }
        _ => eprintln!("peak RSS check skipped: no /proc/self/status VmHWM here"),
    }

    // A layer ending inside that body is truncated, though the body is never read.
    layer.len = 512 + SIZE / 2;
    layer.read = 0;
    let e = View::new(Limits::default())
        .apply(&mut layer, &mut Grab(|_: &str| false))
        .unwrap_err();
    assert!(matches!(e, LayerError::Truncated { .. }), "{e}");
}

#[test]
fn a_large_unkept_file_in_a_compressed_layer_is_streamed_not_held() {
    const SIZE: u64 = 256 << 20;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(header("big", tar::EntryType::Regular, SIZE).as_bytes())
        .unwrap();
    io::copy(&mut io::repeat(0).take(SIZE + 1024), &mut gz).unwrap();
    let gz = gz.finish().unwrap();
    let before = peak_rss();
    let mut v = View::new(Limits::default());
    v.apply(io::Cursor::new(&gz[..]), &mut Grab(|_: &str| false))
        .unwrap();
    assert_eq!(v.listing(), ["- big"]);
    assert_eq!(v.expanded(), 512 + SIZE + 1024);
    match (before, peak_rss()) {
        (Some(before), Some(after)) => {
            assert!(after < before + (128 << 20), "peak RSS {before} -> {after}")
        }
        _ => eprintln!("peak RSS check skipped: no /proc/self/status VmHWM here"),
    }
}

/// Runs `cmd` with `input` on stdin and returns stdout; None if the tool is missing.
fn pipe(cmd: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    let mut child = match Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipped the `{cmd}` check: cannot run it ({e})");
            return None;
        }
    };
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd} {args:?} failed");
    Some(out.stdout)
}

#[test]
fn layers_made_by_system_tar_gzip_and_zstd() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let long = format!("usr/lib/{}/METADATA", "p".repeat(120));
    std::fs::create_dir_all(root.join(&long).parent().unwrap()).unwrap();
    std::fs::write(root.join(&long), "Name: x\n").unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("usr/lib/os-release"), "ID=alpine\n").unwrap();
    std::os::unix::fs::symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
    std::fs::write(root.join("etc/.wh.motd"), "").unwrap();
    let root_arg = root.to_str().unwrap();

    for format in ["--format=pax", "--format=gnu"] {
        let Some(plain) = pipe("tar", &[format, "-cf", "-", "-C", root_arg, "."], b"") else {
            return;
        };
        let base = tar(&[E::F("etc/motd", b"hello")]);
        let mut layers = vec![vec![base.clone(), plain.clone()]];
        if let Some(gz) = pipe("gzip", &["-c"], &plain) {
            layers.push(vec![base.clone(), gz]);
        }
        if let Some(zst) = pipe("zstd", &["-c", "-q"], &plain) {
            layers.push(vec![base.clone(), zst]);
        }
        for pair in layers {
            let v = view(&pair).unwrap();
            assert_eq!(text(&v, &long).as_deref(), Some("Name: x\n"), "{format}");
            assert_eq!(text(&v, "etc/os-release").as_deref(), Some("ID=alpine\n"));
            assert_eq!(text(&v, "etc/motd"), None, "{format}: whited out");
            let files: Vec<_> = v.files().map(|(p, _)| p.to_string()).collect();
            assert_eq!(files, ["usr/lib/os-release".to_string(), long.clone()]);
        }
    }
}
