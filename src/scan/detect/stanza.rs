//! Package databases written as blank-line separated records of `Key: value` lines: dpkg's
//! `status` (Deb822) and apk's `installed` (`X:value`). Both are read the same way: a
//! record's first value of a key wins, a line that is not a field read marks the record as
//! having one (a record of nothing but such lines is still a record, counted as incomplete
//! if it names no package), and the records that name no package and version are counted
//! in one note.

use super::{lines, Fact, Found};

/// How a database spells its records, and which fields are read.
pub struct Syntax<const N: usize> {
    /// The keys read, in the order of [`Stanza::values`].
    pub keys: [&'static str; N],
    /// Deb822 (dpkg): keys match ignoring ASCII case and the white space around them, and a
    /// line starting with a space or tab continues the field before it (skipped: no field
    /// read spans lines). Otherwise (apk) keys match exactly and every line is a field.
    pub deb822: bool,
}

/// One record: the first value of each key read (trimmed), and whether it had anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza<const N: usize> {
    pub values: [Option<String>; N],
    pub other: bool,
}

impl<const N: usize> Stanza<N> {
    fn new() -> Self {
        Stanza {
            values: std::array::from_fn(|_| None),
            other: false,
        }
    }

    fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none) && !self.other
    }
}

impl<const N: usize> Syntax<N> {
    fn slot(&self, key: &str) -> Option<usize> {
        if self.deb822 {
            let key = key.trim();
            self.keys.iter().position(|k| k.eq_ignore_ascii_case(key))
        } else {
            self.keys.iter().position(|k| *k == key)
        }
    }

    fn add(&self, stanza: &mut Stanza<N>, line: &str) {
        if self.deb822 && line.starts_with([' ', '\t']) {
            return;
        }
        let Some((key, value)) = line.split_once(':') else {
            stanza.other = true;
            return;
        };
        match self.slot(key).and_then(|i| stanza.values.get_mut(i)) {
            Some(slot) => {
                if slot.is_none() {
                    *slot = Some(value.trim().to_string());
                }
            }
            None => stanza.other = true,
        }
    }

    /// The records of `text` (lines end in `\n` or `\r\n`; blank or white-space-only lines
    /// separate records, however many).
    pub fn stanzas<'a>(&'a self, text: &'a str) -> impl Iterator<Item = Stanza<N>> + 'a {
        let mut lines = lines(text);
        std::iter::from_fn(move || {
            let mut stanza = Stanza::new();
            for line in lines.by_ref() {
                if !line.trim().is_empty() {
                    self.add(&mut stanza, line);
                } else if !stanza.is_empty() {
                    return Some(stanza);
                }
            }
            (!stanza.is_empty()).then_some(stanza)
        })
    }

    /// Reads a database: `fact` says what each record is, and the incomplete ones are
    /// counted in a note.
    pub fn parse(&self, bytes: &[u8], mut fact: impl FnMut(Stanza<N>) -> Outcome) -> Found {
        let text = String::from_utf8_lossy(bytes);
        let mut found = Found::default();
        let mut incomplete = 0usize;
        for stanza in self.stanzas(&text) {
            match fact(stanza) {
                Outcome::Fact(fact) => found.facts.push(fact),
                Outcome::Skip => {}
                Outcome::Incomplete => incomplete += 1,
            }
        }
        if incomplete > 0 {
            found.notes.push(format!(
                "{incomplete} entries without a package name or version skipped"
            ));
        }
        found
    }
}

/// What a record is.
pub enum Outcome {
    Fact(Fact),
    /// Not a package to report (dpkg's removed packages), and nothing wrong.
    Skip,
    /// No package name or version.
    Incomplete,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::detect::Manager;

    const DPKG: Syntax<2> = Syntax {
        keys: ["Package", "Version"],
        deb822: true,
    };
    const APK: Syntax<2> = Syntax {
        keys: ["P", "V"],
        deb822: false,
    };

    fn stanza<const N: usize>(values: [Option<&str>; N], other: bool) -> Stanza<N> {
        Stanza {
            values: values.map(|v| v.map(String::from)),
            other,
        }
    }

    fn read<const N: usize>(syntax: &Syntax<N>, text: &str) -> Vec<Stanza<N>> {
        syntax.stanzas(text).collect()
    }

    #[test]
    fn deb822_keys_and_continuation_lines() {
        let text = "package : a\nVERSION: 1 \nDescription: x\n Version: 9\n\tPackage: z\n \
                    .\nPackage: ignored\n";
        assert_eq!(read(&DPKG, text), [stanza([Some("a"), Some("1")], true)]);
        // Continuation lines alone make no record.
        assert_eq!(read(&DPKG, " Package: a\n\t.\n"), []);
    }

    #[test]
    fn apk_keys_are_exact_single_letters() {
        let text = "P:musl\np:so:libc.musl-x86_64.so.1\nV:1.2.4-r4\nV:9\n";
        assert_eq!(
            read(&APK, text),
            [stanza([Some("musl"), Some("1.2.4-r4")], true)]
        );
        assert_eq!(read(&APK, "P :a\nV:1\n"), [stanza([None, Some("1")], true)]);
        // No continuation lines: a line starting with white space is a field like any other.
        assert_eq!(read(&APK, " P:a\n"), [stanza([None, None], true)]);
        assert_eq!(read(&APK, "P:a:b\n"), [stanza([Some("a:b"), None], false)]);
    }

    #[test]
    fn blank_lines_crlf_and_the_last_record() {
        let text = "\r\n\r\nP:a\r\nV:1\r\n \t\r\n\r\nP:b\r\nV:2";
        assert_eq!(
            read(&APK, text),
            [
                stanza([Some("a"), Some("1")], false),
                stanza([Some("b"), Some("2")], false),
            ]
        );
        assert_eq!(read(&APK, ""), []);
        assert_eq!(read(&APK, "\n\n"), []);
    }

    #[test]
    fn lines_that_are_not_fields_make_a_record() {
        assert_eq!(
            read(&APK, "nonsense\n\nP:\n"),
            [stanza([None, None], true), stanza([Some(""), None], false)]
        );
    }

    #[test]
    fn parse_counts_incomplete_records_in_one_note() {
        let found = APK.parse(b"P:a\nV:1\n\nP:b\n\nV:2\n\nP:c\nV:3\n", |s| {
            match s.values {
                [Some(p), Some(v)] if p != "c" => {
                    Outcome::Fact(Fact::os(Manager::Apk, &p, &v, None))
                }
                [Some(_), Some(_)] => Outcome::Skip,
                _ => Outcome::Incomplete,
            }
        });
        assert_eq!(
            found
                .facts
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(
            found.notes,
            ["2 entries without a package name or version skipped"]
        );
        assert_eq!(APK.parse(b"P:a\n", |_| Outcome::Skip), Found::default());
    }
}
