//! A section of records in `ringyard config defaults` and in the README's reference, from its
//! declaration alone: the doc and each field's type, need and doc as comments, and a commented
//! example record that the declarations' test proves valid.

use super::{Need, Section, Shape};
use crate::config::settings::{self, wrap};

impl<C> Section<C> {
    /// The section in `config defaults`, `depth` levels in: its doc and fields as comments,
    /// the key with no records (so the file changes nothing), and a commented example record.
    pub(in crate::config) fn defaults(&self, depth: usize) -> String {
        let indent = "  ".repeat(depth);
        let width = 96 - indent.len();
        let what = match self.shape {
            Shape::List => "A list of records".to_string(),
            Shape::Map { names, .. } => {
                format!("A mapping from names ({}) to records", names.expected())
            }
        };
        let about =
            format!("{what}, set only in this file (no environment variable or flag); each has:");
        let mut out = String::new();
        for line in wrap(words(self.doc).chain(words(&about)), width) {
            out.push_str(&format!("{indent}# {line}\n"));
        }
        for f in self.fields {
            let lines = wrap(words(&f.summary()).chain(words(f.doc)), width - 4);
            for (i, line) in lines.iter().enumerate() {
                let lead = if i == 0 { "  " } else { "    " };
                out.push_str(&format!("{indent}#{lead} {line}\n"));
            }
        }
        let none = match self.shape {
            Shape::List => "[]",
            Shape::Map { .. } => "{}",
        };
        out.push_str(&format!("{indent}{}: {none}\n", settings::leaf(self.key)));
        out.push_str(&format!("{indent}# For example:\n"));
        for line in self.example(false).lines() {
            out.push_str(&format!("{indent}# {line}\n"));
        }
        out
    }

    /// The section's key with one record under it, as in the file; with `minimal`, only the
    /// required fields.
    pub(super) fn example(&self, minimal: bool) -> String {
        let (first, rest) = match self.shape {
            Shape::List => ("  - ", "    "),
            Shape::Map { .. } => ("    ", "    "),
        };
        let mut lines = Vec::new();
        for f in self.fields {
            let shown = match f.need {
                Need::Required => f.example,
                _ if minimal => None,
                _ => f.shown(),
            };
            if let Some(v) = shown {
                let lead = if lines.is_empty() { first } else { rest };
                lines.push(format!("{lead}{}: {v}\n", f.name));
            }
        }
        let mut out = format!("{}:\n", settings::leaf(self.key));
        match self.shape {
            Shape::List if lines.is_empty() => out.push_str("  - {}\n"),
            Shape::Map { example, .. } if lines.is_empty() => {
                out.push_str(&format!("  {example}: {{}}\n"))
            }
            Shape::Map { example, .. } => out.push_str(&format!("  {example}:\n")),
            Shape::List => {}
        }
        out.extend(lines);
        out
    }
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(' ').map(str::to_string)
}

/// The README's reference for `sections`: a table of fields for each; empty when there are
/// none.
pub fn markdown<C>(sections: &[Section<C>]) -> String {
    let mut out = String::new();
    for s in sections {
        out.push_str(&format!(
            "\n`{}`: {}, set only in the file. {}\n\n| field | type | required | meaning |\n|---|---|---|---|\n",
            s.key,
            s.what(),
            s.doc
        ));
        for f in s.fields {
            let need = match f.need {
                Need::Optional => "no".to_string(),
                Need::Required => "yes".to_string(),
                Need::Default(d) => format!("default `{d}`"),
            };
            out.push_str(&format!(
                "| `{}` | {} | {need} | {} |\n",
                f.name,
                f.ty.expected(),
                f.doc.replace('|', "\\|")
            ));
        }
    }
    out
}
