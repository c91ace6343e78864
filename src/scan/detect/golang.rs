//! Go binaries' build information: the toolchain version and the modules linked in, which
//! the Go linker writes into a `\xff Go buildinf:` blob, in the `.go.buildinfo` section or,
//! when section headers are stripped, near the start of the first writable segment.
//!
//! Since Go 1.18 the blob carries both strings inline (flags bit 2): a 32-byte header, then
//! the version and the module list, each a uvarint length and bytes. Older binaries store
//! pointers to them instead; those are noted, not read.
//!
//! The toolchain becomes the package `stdlib` at the version OSV's Go records use for it:
//! `go1.19.8` is `1.19.8`, `go1.20` (the first 1.20 release) `1.20.0`, `go1.21rc2`
//! `1.21.0-rc.2`, without Go's `go` prefix and without the `v` that module versions have.

use std::io;

use super::elf::{read_range, Elf, ReadAt};
use super::{lines, Ecosystem, Fact, Found};

const MAGIC: &[u8] = b"\xff Go buildinf:";
const HEADER: usize = 32;
const ALIGN: usize = 16;
/// How far into the section or segment the blob is looked for (as Go's own reader does).
pub const WINDOW: u64 = 64 << 10;
/// The most the version and module list may take; a program with a thousand modules
/// needs about 150 KiB.
pub const STRINGS_LIMIT: u64 = 4 << 20;

/// Reads a Go binary's build information; empty for a binary Go did not build.
pub fn read(r: &(impl ReadAt + ?Sized), elf: &Elf) -> io::Result<Found> {
    let range = match elf.section(r, b".go.buildinfo")? {
        Some(range) => Some(range),
        None => elf.data_segment(r)?,
    };
    let Some(range) = range else {
        return Ok(Found::default());
    };
    let window = read_range(r, range.offset, range.size.min(WINDOW), WINDOW)?;
    let Some(at) = find_magic(&window) else {
        return Ok(Found::default());
    };
    let Some(start) = range.offset.checked_add(at as u64) else {
        return Ok(Found::default());
    };
    let blob = read_range(
        r,
        start,
        HEADER as u64 + STRINGS_LIMIT,
        HEADER as u64 + STRINGS_LIMIT,
    )?;
    Ok(match decode(&blob) {
        Decoded::Inline { version, modinfo } => facts(&version, &modinfo),
        Decoded::Pointers => {
            Found::note("Go binary built before Go 1.18: build information not read")
        }
        Decoded::Garbled => Found::note("Go build information is truncated or malformed: not read"),
    })
}

/// The offset of the blob's header in `data`: the magic at a 16-byte boundary with a whole
/// header after it.
pub fn find_magic(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    while at < data.len() {
        let rest = data.get(at..)?;
        if rest.len() >= HEADER && rest.starts_with(MAGIC) {
            return Some(at);
        }
        at = at.checked_add(ALIGN)?;
    }
    None
}

/// A blob's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The toolchain version and the module list, framing removed (empty when absent, as in
    /// a binary built outside module mode).
    Inline {
        version: String,
        modinfo: String,
    },
    /// The pre-1.18 format, with pointers to the strings.
    Pointers,
    Garbled,
}

/// Decodes a blob starting at its header.
pub fn decode(blob: &[u8]) -> Decoded {
    let Some(flags) = blob.get(15) else {
        return Decoded::Garbled;
    };
    if flags & 2 == 0 {
        return Decoded::Pointers;
    }
    let rest = blob.get(HEADER..).unwrap_or(&[]);
    let Some((version, rest)) = string(rest) else {
        return Decoded::Garbled;
    };
    let Some((modinfo, _)) = string(rest) else {
        return Decoded::Garbled;
    };
    if version.is_empty() {
        return Decoded::Garbled;
    }
    // cmd/go frames the module list with 16-byte sentinels; the last line ends before the
    // closing one.
    let modinfo = if modinfo.len() >= 33 && modinfo.get(modinfo.len() - 17) == Some(&b'\n') {
        modinfo.get(16..modinfo.len() - 16).unwrap_or(&[])
    } else {
        &[]
    };
    Decoded::Inline {
        version: String::from_utf8_lossy(version).into_owned(),
        modinfo: String::from_utf8_lossy(modinfo).into_owned(),
    }
}

/// A uvarint-length-prefixed string and what follows it.
fn string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len: u64 = 0;
    let mut used = 0;
    for (i, byte) in data.iter().enumerate().take(10) {
        len |= u64::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            used = i + 1;
            break;
        }
    }
    if used == 0 {
        return None;
    }
    let rest = data.get(used..)?;
    let len = usize::try_from(len).ok()?;
    Some((rest.get(..len)?, rest.get(len..)?))
}

/// The packages a version and module list name.
pub fn facts(version: &str, modinfo: &str) -> Found {
    let mut found = Found::default();
    match stdlib_version(version) {
        Some(v) => found.facts.push(go_fact("stdlib", &v)),
        None => found.notes.push(format!(
            "Go toolchain version `{version}` is not a release: the standard library is not \
             listed"
        )),
    }
    // Each `mod` or `dep` line names a module; a `=>` line right after it names what
    // replaced it, which is what was linked.
    let mut modules: Vec<Option<(String, String)>> = Vec::new();
    for line in lines(modinfo) {
        let mut fields = line.split('\t');
        let kind = fields.next();
        let path = fields.next().unwrap_or("").to_string();
        let version = fields.next().unwrap_or("").to_string();
        match kind {
            Some("mod" | "dep") => modules.push(Some((path, version))),
            Some("=>") => {
                if let Some(last) = modules.last_mut() {
                    // Replaced by a local directory: no module version to match.
                    *last = (!version.is_empty()).then_some((path, version));
                }
            }
            _ => {}
        }
    }
    for (path, version) in modules.into_iter().flatten() {
        // `(devel)`: a main module built from a working tree, not a version.
        if !path.is_empty() && !version.is_empty() && version != "(devel)" {
            found.facts.push(go_fact(&path, &version));
        }
    }
    found
}

fn go_fact(name: &str, version: &str) -> Fact {
    Fact {
        ecosystem: Ecosystem::Named("Go"),
        name: name.to_string(),
        version: version.to_string(),
        binary: None,
    }
}

/// `go1.19.8` as `1.19.8` (see the module docs); None for a development toolchain
/// (`devel go1.23-abc`) or anything else.
pub fn stdlib_version(version: &str) -> Option<String> {
    let v = version.split_whitespace().next()?.strip_prefix("go")?;
    let digits = |s: &str| -> Option<(u64, usize)> {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        Some((s.get(..n)?.parse().ok()?, n))
    };
    let (major, n) = digits(v)?;
    let v = v.get(n..)?.strip_prefix('.')?;
    let (minor, n) = digits(v)?;
    let mut v = v.get(n..)?;
    let mut patch = 0;
    if let Some(rest) = v.strip_prefix('.') {
        let (p, n) = digits(rest)?;
        patch = p;
        v = rest.get(n..)?;
    }
    let pre = if v.is_empty() {
        String::new()
    } else {
        let (kind, rest) = if let Some(rest) = v.strip_prefix("rc") {
            ("rc", rest)
        } else {
            ("beta", v.strip_prefix("beta")?)
        };
        let (n, len) = digits(rest)?;
        if len != rest.len() {
            return None;
        }
        format!("-{kind}.{n}")
    };
    Some(format!("{major}.{minor}.{patch}{pre}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    const START: &[u8] = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";
    const END: &[u8] = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2";

    fn varint(mut n: usize, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }

    /// An inline (Go 1.18+) build information blob.
    pub(crate) fn blob(version: &str, modinfo: &str) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.push(8);
        out.push(2);
        out.resize(HEADER, 0);
        varint(version.len(), &mut out);
        out.extend_from_slice(version.as_bytes());
        let framed = [START, modinfo.as_bytes(), END].concat();
        varint(framed.len(), &mut out);
        out.extend_from_slice(&framed);
        out
    }

    fn go(name: &str, version: &str) -> Fact {
        go_fact(name, version)
    }

    const MODINFO: &str = "path\texample.com/app\n\
        mod\texample.com/app\t(devel)\t\n\
        dep\tgolang.org/x/net\tv0.17.0\th1:abc=\n\
        dep\texample.com/old\tv0.1.0\n\
        =>\texample.com/fork\tv0.2.0\th1:def=\n\
        dep\texample.com/local\tv1.0.0\n\
        =>\t../local\t\t\n\
        build\t-compiler=gc\n";

    #[test]
    fn decodes_an_inline_blob() {
        let b = blob("go1.21.5", MODINFO);
        assert_eq!(
            decode(&b),
            Decoded::Inline {
                version: "go1.21.5".into(),
                modinfo: MODINFO.into()
            }
        );
        let found = facts("go1.21.5", MODINFO);
        assert_eq!(
            found.facts,
            vec![
                go("stdlib", "1.21.5"),
                go("golang.org/x/net", "v0.17.0"),
                go("example.com/fork", "v0.2.0"),
            ]
        );
        assert!(found.notes.is_empty());
    }

    #[test]
    fn main_module_with_a_version_counts() {
        let found = facts("go1.24.0", "mod\texample.com/app\tv1.4.0\th1:x=\n");
        assert_eq!(
            found.facts,
            vec![go("stdlib", "1.24.0"), go("example.com/app", "v1.4.0")]
        );
    }

    #[test]
    fn finds_the_magic_only_aligned() {
        let b = blob("go1.20", "");
        let mut data = vec![0u8; 48];
        data[3..3 + MAGIC.len()].copy_from_slice(MAGIC);
        data.extend_from_slice(&b);
        assert_eq!(find_magic(&data), Some(48));
        assert_eq!(find_magic(&b[..HEADER - 1]), None);
        assert_eq!(find_magic(&[]), None);
    }

    #[test]
    fn old_and_broken_blobs() {
        let mut old = MAGIC.to_vec();
        old.extend_from_slice(&[8, 0]);
        old.resize(HEADER, 0);
        assert_eq!(decode(&old), Decoded::Pointers);
        let b = blob("go1.21.5", MODINFO);
        for len in 0..b.len() {
            let d = decode(&b[..len]);
            assert!(
                matches!(d, Decoded::Garbled) || len == b.len(),
                "{len}: {d:?}"
            );
        }
        let mut huge = b[..HEADER].to_vec();
        huge.extend_from_slice(&[0xff; 12]);
        assert_eq!(decode(&huge), Decoded::Garbled);
        // No framing: the module list is empty.
        let mut unframed = b[..HEADER].to_vec();
        unframed.extend_from_slice(b"\x03go1\x03abc");
        assert_eq!(
            decode(&unframed),
            Decoded::Inline {
                version: "go1".into(),
                modinfo: String::new()
            }
        );
    }

    #[test]
    fn stdlib_versions() {
        assert_eq!(stdlib_version("go1.19.8").as_deref(), Some("1.19.8"));
        assert_eq!(stdlib_version("go1.20").as_deref(), Some("1.20.0"));
        assert_eq!(stdlib_version("go1.21rc2").as_deref(), Some("1.21.0-rc.2"));
        assert_eq!(
            stdlib_version("go1.18beta1").as_deref(),
            Some("1.18.0-beta.1")
        );
        assert_eq!(
            stdlib_version("go1.22.1 X:boringcrypto").as_deref(),
            Some("1.22.1")
        );
        assert_eq!(stdlib_version("devel go1.23-abc"), None);
        assert_eq!(stdlib_version("go1"), None);
        assert_eq!(stdlib_version("go1.x"), None);
        assert_eq!(stdlib_version("go1.21rc"), None);
        assert_eq!(stdlib_version("go1.21.0-abc"), None);
        assert_eq!(stdlib_version(""), None);
        let found = facts("devel go1.23-abc", "");
        assert!(found.facts.is_empty());
        assert_eq!(found.notes.len(), 1);
    }

    #[test]
    fn reads_a_hand_made_elf() {
        let b = blob("go1.21.5", MODINFO);
        for sections in [&[(".go.buildinfo", &b[..])][..], &[]] {
            let segment = if sections.is_empty() {
                [vec![0; 32], b.clone()].concat()
            } else {
                b"data".to_vec()
            };
            let file = crate::scan::detect::elf::tests::build(true, false, sections, &segment);
            let elf = Elf::parse(&file[..]).expect("memory").expect("elf");
            let found = read(&file[..], &elf).expect("memory");
            assert_eq!(found.facts.len(), 3, "{found:?}");
        }
    }

    /// Builds a real Go program with a vendored dependency and a replaced one (offline),
    /// then reads its build information back, with sections and without.
    #[test]
    fn reads_a_real_go_binary() {
        let Ok(out) = Command::new("go").arg("version").output() else {
            println!("skipped: `go` is not installed (apt-get install golang-go)");
            return;
        };
        let toolchain = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .unwrap_or("")
            .to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let write = |rel: &str, text: &str| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        };
        write(
            "go.mod",
            "module example.com/app\n\ngo 1.18\n\nrequire (\n\texample.com/dep v1.2.3\n\t\
             example.com/old v0.1.0\n)\n\nreplace example.com/old => example.com/fork v0.2.0\n",
        );
        write(
            "main.go",
            "package main\n\nimport (\n\t\"example.com/dep\"\n\t\"example.com/old\"\n)\n\n\
             func main() { println(dep.Hello(), old.X()) }\n",
        );
        write(
            "vendor/example.com/dep/dep.go",
            "package dep\n\nfunc Hello() string { return \"hi\" }\n",
        );
        write(
            "vendor/example.com/old/old.go",
            "package old\n\nfunc X() int { return 1 }\n",
        );
        write(
            "vendor/modules.txt",
            "# example.com/dep v1.2.3\n## explicit\nexample.com/dep\n\
             # example.com/old v0.1.0 => example.com/fork v0.2.0\n## explicit\nexample.com/old\n\
             # example.com/old => example.com/fork v0.2.0\n",
        );
        let status = Command::new("go")
            .args(["build", "-o", "app", "."])
            .current_dir(root)
            .env("GOFLAGS", "-mod=vendor")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOCACHE", root.join("cache"))
            .env("GOPATH", root.join("gopath"))
            .env("HOME", root)
            .status()
            .expect("run go build");
        assert!(status.success(), "go build failed");
        let expected = vec![
            go(
                "stdlib",
                &stdlib_version(&toolchain).expect("toolchain version"),
            ),
            go("example.com/dep", "v1.2.3"),
            go("example.com/fork", "v0.2.0"),
        ];
        let check = |path: &Path| {
            let file = std::fs::File::open(path).expect("open binary");
            let elf = Elf::parse(&file).expect("read").expect("ELF");
            let found = read(&file, &elf).expect("read");
            assert_eq!(found.facts, expected, "{}", path.display());
            assert!(found.notes.is_empty(), "{:?}", found.notes);
        };
        let app = root.join("app");
        check(&app);
        // Without section headers, the blob is found in the data segment.
        let mut bytes = std::fs::read(&app).expect("read binary");
        bytes[0x28..0x30].fill(0); // e_shoff
        bytes[0x3c..0x40].fill(0); // e_shnum, e_shstrndx
        let stripped = root.join("stripped");
        std::fs::write(&stripped, &bytes).expect("write");
        let file = std::fs::File::open(&stripped).expect("open");
        let elf = Elf::parse(&file).expect("read").expect("ELF");
        assert_eq!(elf.section(&file, b".go.buildinfo").expect("read"), None);
        check(&stripped);
    }
}
