//! Just enough ELF to find a section by name, or the first writable segment, in a file read
//! at offsets: headers are read one entry at a time, names only as far as the longest name
//! looked for, so memory stays a few bytes whatever the binary (the `object` crate's cache
//! keeps every string and table it touches).

use std::fs::File;
use std::io;

/// Random access to a file's bytes.
pub trait ReadAt {
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; fewer bytes only at the end of the file.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let Some(at) = offset.checked_add(done as u64) else {
                break;
            };
            let Some(rest) = buf.get_mut(done..) else {
                break;
            };
            match std::os::unix::fs::FileExt::read_at(self, rest, at) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let src = self.get(start..).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), src.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }
}

/// Reads up to `len` bytes at `offset` (fewer at the end of the file), never more than
/// `limit`.
pub fn read_range(
    r: &(impl ReadAt + ?Sized),
    offset: u64,
    len: u64,
    limit: u64,
) -> io::Result<Vec<u8>> {
    let available = r.size().saturating_sub(offset);
    let len = len.min(available).min(limit);
    let mut buf = vec![0; usize::try_from(len).unwrap_or(0)];
    let n = r.read_at(&mut buf, offset)?;
    buf.truncate(n);
    Ok(buf)
}

/// The most section headers read; executables have a few dozen.
const MAX_SECTIONS: u64 = 1 << 16;
/// The most program headers read.
const MAX_SEGMENTS: u64 = 1 << 12;

/// Why a file is not an ELF file this reader understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// An ELF file's header fields this reader uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    wide: bool,
    big: bool,
    phoff: u64,
    phentsize: u64,
    phnum: u64,
    shoff: u64,
    shentsize: u64,
    shnum: u64,
    shstrndx: u64,
}

/// A section's place in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub offset: u64,
    pub size: u64,
}

const SHT_NOBITS: u32 = 8;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PF_W: u32 = 2;

impl Elf {
    /// Reads the file header; an I/O error is the outer error, a file that is not ELF (or
    /// not one this reader can follow) the inner one.
    pub fn parse(r: &(impl ReadAt + ?Sized)) -> io::Result<Result<Elf, Malformed>> {
        let mut h = [0u8; 64];
        let n = r.read_at(&mut h, 0)?;
        let h = h.get(..n).unwrap_or(&[]);
        if h.get(..4) != Some(b"\x7fELF") {
            return Ok(Err(Malformed("no ELF magic")));
        }
        let wide = match h.get(4) {
            Some(1) => false,
            Some(2) => true,
            _ => return Ok(Err(Malformed("unknown ELF class"))),
        };
        let big = match h.get(5) {
            Some(1) => false,
            Some(2) => true,
            _ => return Ok(Err(Malformed("unknown ELF byte order"))),
        };
        let f = Fields { data: h, big, wide };
        // e_phoff, e_shoff (words), e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx.
        let [phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx] = if wide {
            [0x20, 0x28, 0x36, 0x38, 0x3a, 0x3c, 0x3e]
        } else {
            [0x1c, 0x20, 0x2a, 0x2c, 0x2e, 0x30, 0x32]
        };
        let header = (|| {
            Some(Elf {
                wide,
                big,
                phoff: f.word(phoff)?,
                shoff: f.word(shoff)?,
                phentsize: f.u16(phentsize)?,
                phnum: f.u16(phnum)?,
                shentsize: f.u16(shentsize)?,
                shnum: f.u16(shnum)?,
                shstrndx: f.u16(shstrndx)?,
            })
        })();
        let Some(mut elf) = header else {
            return Ok(Err(Malformed("truncated ELF header")));
        };
        // Extended numbering: counts too large for the header live in section 0.
        if elf.shoff != 0 && (elf.shnum == 0 || elf.shstrndx == 0xffff) {
            if let Some(zero) = elf.section_header(r, 0)? {
                if elf.shnum == 0 {
                    elf.shnum = zero.size;
                }
                if elf.shstrndx == 0xffff {
                    elf.shstrndx = zero.link;
                }
            }
        }
        Ok(Ok(elf))
    }

    /// Fields of a header read from this file.
    fn fields<'a>(&self, data: &'a [u8]) -> Fields<'a> {
        Fields {
            data,
            big: self.big,
            wide: self.wide,
        }
    }

    fn section_header(
        &self,
        r: &(impl ReadAt + ?Sized),
        index: u64,
    ) -> io::Result<Option<SectionHeader>> {
        // sh_name, sh_type, sh_offset and sh_size (words), sh_link.
        let (len, [name, kind, offset, size, link]) = if self.wide {
            (64usize, [0, 4, 24, 32, 40])
        } else {
            (40, [0, 4, 16, 20, 24])
        };
        if self.shentsize < len as u64 {
            return Ok(None);
        }
        let Some(at) = index
            .checked_mul(self.shentsize)
            .and_then(|o| o.checked_add(self.shoff))
        else {
            return Ok(None);
        };
        let mut buf = [0u8; 64];
        let Some(buf) = buf.get_mut(..len) else {
            return Ok(None);
        };
        if r.read_at(buf, at)? < len {
            return Ok(None);
        }
        let f = self.fields(buf);
        Ok((|| {
            Some(SectionHeader {
                name: f.u32(name)?,
                kind: f.u32(kind)? as u32,
                offset: f.word(offset)?,
                size: f.word(size)?,
                link: f.u32(link)?,
            })
        })())
    }

    /// The file range of the section called `name` (None when there is no such section, it
    /// has no bytes in the file, or the section table is unreadable).
    pub fn section(&self, r: &(impl ReadAt + ?Sized), name: &[u8]) -> io::Result<Option<Range>> {
        if self.shoff == 0 || self.shnum == 0 || self.shnum > MAX_SECTIONS {
            return Ok(None);
        }
        let Some(names) = self.section_header(r, self.shstrndx)? else {
            return Ok(None);
        };
        // One byte more than the name, to see the terminating NUL.
        let mut buf = vec![0u8; name.len() + 1];
        for index in 1..self.shnum {
            let Some(s) = self.section_header(r, index)? else {
                return Ok(None);
            };
            if s.name
                .checked_add(buf.len() as u64)
                .is_none_or(|end| end > names.size)
            {
                continue;
            }
            let Some(at) = names.offset.checked_add(s.name) else {
                continue;
            };
            if r.read_at(&mut buf, at)? == buf.len()
                && buf.get(..name.len()) == Some(name)
                && buf.last() == Some(&0)
            {
                if s.kind == SHT_NOBITS {
                    return Ok(None);
                }
                return Ok(Some(Range {
                    offset: s.offset,
                    size: s.size,
                }));
            }
        }
        Ok(None)
    }

    /// The file range of the first loadable segment that is writable and not executable:
    /// where the Go linker puts its build information in a binary without section headers.
    pub fn data_segment(&self, r: &(impl ReadAt + ?Sized)) -> io::Result<Option<Range>> {
        let (len, flags_at, offset_at, filesz_at) = if self.wide {
            (56usize, 4usize, 8usize, 32usize)
        } else {
            (32, 24, 4, 16)
        };
        if self.phoff == 0 || self.phentsize < len as u64 || self.phnum > MAX_SEGMENTS {
            return Ok(None);
        }
        let mut buf = [0u8; 56];
        let Some(buf) = buf.get_mut(..len) else {
            return Ok(None);
        };
        for index in 0..self.phnum {
            let Some(at) = index
                .checked_mul(self.phentsize)
                .and_then(|o| o.checked_add(self.phoff))
            else {
                return Ok(None);
            };
            if r.read_at(buf, at)? < len {
                return Ok(None);
            }
            let f = self.fields(buf);
            let (Some(kind), Some(flags), Some(offset), Some(size)) = (
                f.u32(0),
                f.u32(flags_at),
                f.word(offset_at),
                f.word(filesz_at),
            ) else {
                return Ok(None);
            };
            if kind == PT_LOAD as u64 && flags as u32 & (PF_X | PF_W) == PF_W {
                return Ok(Some(Range { offset, size }));
            }
        }
        Ok(None)
    }
}

struct SectionHeader {
    name: u64,
    kind: u32,
    offset: u64,
    size: u64,
    link: u64,
}

/// Integers at offsets of a header, in the file's byte order.
struct Fields<'a> {
    data: &'a [u8],
    big: bool,
    /// ELF64: a word (address or offset) is 8 bytes, not 4.
    wide: bool,
}

impl Fields<'_> {
    /// The unsigned integer of `width` (at most 8) bytes at `at`.
    fn uint(&self, at: usize, width: usize) -> Option<u64> {
        let bytes = self.data.get(at..at.checked_add(width)?)?;
        let digit = |n: u64, b: &u8| n << 8 | u64::from(*b);
        Some(if self.big {
            bytes.iter().fold(0, digit)
        } else {
            bytes.iter().rev().fold(0, digit)
        })
    }

    fn u16(&self, at: usize) -> Option<u64> {
        self.uint(at, 2)
    }

    fn u32(&self, at: usize) -> Option<u64> {
        self.uint(at, 4)
    }

    fn word(&self, at: usize) -> Option<u64> {
        self.uint(at, if self.wide { 8 } else { 4 })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A little ELF64 or ELF32 file: the given sections (name, contents) after the header,
    /// then a section name table, then the section headers, and one writable PT_LOAD
    /// segment covering `segment`.
    pub(crate) fn build(
        wide: bool,
        big: bool,
        sections: &[(&str, &[u8])],
        segment: &[u8],
    ) -> Vec<u8> {
        let put = |out: &mut Vec<u8>, at: usize, value: u64, width: usize| {
            let bytes = if big {
                value.to_be_bytes()[8 - width..].to_vec()
            } else {
                value.to_le_bytes()[..width].to_vec()
            };
            out[at..at + width].copy_from_slice(&bytes);
        };
        let word = if wide { 8 } else { 4 };
        let (ehsize, phentsize, shentsize) = if wide { (64, 56, 64) } else { (52, 32, 40) };
        let mut out = vec![0u8; ehsize + phentsize];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = if wide { 2 } else { 1 };
        out[5] = if big { 2 } else { 1 };
        out[6] = 1;
        let seg_offset = out.len();
        out.extend_from_slice(segment);
        let mut placed = Vec::new();
        for (_, data) in sections {
            placed.push((out.len(), data.len()));
            out.extend_from_slice(data);
        }
        let mut names = vec![0u8];
        let mut name_at = Vec::new();
        for (name, _) in sections.iter().copied().chain([(".shstrtab", &[][..])]) {
            name_at.push(names.len());
            names.extend_from_slice(name.as_bytes());
            names.push(0);
        }
        let names_offset = out.len();
        out.extend_from_slice(&names);
        let shoff = out.len();
        let shnum = sections.len() + 2;
        out.resize(shoff + shnum * shentsize, 0);
        for (i, ((offset, size), name)) in placed
            .iter()
            .copied()
            .chain([(names_offset, names.len())])
            .zip(&name_at)
            .enumerate()
        {
            let at = shoff + (i + 1) * shentsize;
            put(&mut out, at, *name as u64, 4);
            put(&mut out, at + 4, if i == sections.len() { 3 } else { 1 }, 4);
            let (o, s) = if wide { (24, 32) } else { (16, 20) };
            put(&mut out, at + o, offset as u64, word);
            put(&mut out, at + s, size as u64, word);
        }
        // Program header: PT_LOAD, PF_R|PF_W.
        let ph = ehsize;
        put(&mut out, ph, 1, 4);
        let (flags, off, filesz) = if wide { (4, 8, 32) } else { (24, 4, 16) };
        put(&mut out, ph + flags, 6, 4);
        put(&mut out, ph + off, seg_offset as u64, word);
        put(&mut out, ph + filesz, segment.len() as u64, word);
        // e_phoff, e_shoff, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx.
        let header = if wide {
            [0x20, 0x28, 0x36, 0x38, 0x3a, 0x3c, 0x3e]
        } else {
            [0x1c, 0x20, 0x2a, 0x2c, 0x2e, 0x30, 0x32]
        };
        let values = [
            (ehsize, word),
            (shoff, word),
            (phentsize, 2),
            (1, 2),
            (shentsize, 2),
            (shnum, 2),
            (shnum - 1, 2),
        ];
        for (at, (value, width)) in header.into_iter().zip(values) {
            put(&mut out, at, value as u64, width);
        }
        out
    }

    fn section(file: &[u8], name: &str) -> Option<Vec<u8>> {
        let elf = Elf::parse(file).expect("memory").expect("elf");
        let range = elf.section(file, name.as_bytes()).expect("memory")?;
        Some(read_range(file, range.offset, range.size, 1 << 20).expect("memory"))
    }

    #[test]
    fn finds_sections_in_every_class_and_order() {
        for wide in [false, true] {
            for big in [false, true] {
                let file = build(
                    wide,
                    big,
                    &[
                        (".text", b"code"),
                        (".go.buildinfo", b"info"),
                        (".go.buildinfox", b"no"),
                    ],
                    b"segment",
                );
                assert_eq!(
                    section(&file, ".go.buildinfo").as_deref(),
                    Some(&b"info"[..])
                );
                assert_eq!(section(&file, ".text").as_deref(), Some(&b"code"[..]));
                assert_eq!(section(&file, ".go.buildinf"), None);
                assert_eq!(section(&file, ".dep-v0"), None);
                let elf = Elf::parse(&file[..]).expect("memory").expect("elf");
                let seg = elf
                    .data_segment(&file[..])
                    .expect("memory")
                    .expect("segment");
                assert_eq!(
                    read_range(&file[..], seg.offset, seg.size, 100).expect("memory"),
                    b"segment"
                );
            }
        }
    }

    #[test]
    fn real_binary_sections() {
        let Ok(file) = File::open("/bin/true") else {
            println!("skipped: /bin/true is missing");
            return;
        };
        let elf = Elf::parse(&file).expect("read").expect("/bin/true is ELF");
        let text = elf.section(&file, b".text").expect("read");
        assert!(text.is_some_and(|t| t.size > 0));
        assert_eq!(elf.section(&file, b".go.buildinfo").expect("read"), None);
    }

    #[test]
    fn truncations_and_garbage_are_no_panic() {
        let file = build(true, false, &[(".dep-v0", b"x")], b"seg");
        for len in 0..file.len() {
            let part = &file[..len];
            if let Ok(Ok(elf)) = Elf::parse(part) {
                let _ = elf.section(part, b".dep-v0");
                let _ = elf.data_segment(part);
            }
        }
        let mut flipped = file.clone();
        for i in 0..flipped.len() {
            flipped[i] ^= 0xff;
            if let Ok(Ok(elf)) = Elf::parse(&flipped[..]) {
                let _ = elf.section(&flipped[..], b".dep-v0");
                let _ = elf.data_segment(&flipped[..]);
            }
            flipped[i] ^= 0xff;
        }
        assert_eq!(
            Elf::parse(&b"MZ"[..]).expect("memory"),
            Err(Malformed("no ELF magic"))
        );
        assert!(read_range(&b"abc"[..], 10, 5, 5)
            .expect("memory")
            .is_empty());
        assert_eq!(
            read_range(&b"abcdef"[..], 1, 100, 3).expect("memory"),
            b"bcd"
        );
    }
}
