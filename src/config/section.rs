//! Sections of records: the parts of the file that hold lists or maps of typed records
//! (`auth.access: [{repository, users, actions}]`, `notify.endpoints: {ops: {url, headers}}`),
//! which a scalar setting of [`super::settings`] cannot. A feature declares its section once, in
//! [`SECTIONS`]: key, shape, fields (type, required or default, example, doc line) and the
//! function that turns the [`Record`]s read into the plain structs its [`Config`] field holds.
//! That one declaration drives the file reader, `ringyard config defaults` and the README's
//! reference, as [`super::settings::SETTINGS`] does for scalars.
//!
//! Sections are file-only: a list of records has no honest spelling as one environment variable
//! or flag, so a `RINGYARD_*` variable naming one is refused ([`super::env`]). Values are checked
//! by the settings' own parsers ([`Kind::parse`]), so bounds and messages are the same, and every
//! problem is reported at once with the file, the line and the full path
//! (`auth.access[2].actions[0]`).

use super::file::{is_null, line_of, what};
use super::settings::{self, wrap, Kind, Value};
use super::source::{ConfigError, Origin};
use super::value::closest;
use super::Config;
use marked_yaml::types::MarkedMappingNode;
use marked_yaml::Node;
use std::time::Duration;

/// Every section of records, in the order `config defaults` shows them among the settings.
/// None yet: the features that need one (access rules, notification endpoints, retention
/// policies) declare theirs here.
pub static SECTIONS: &[Section<Config>] = &[];

/// What a string must be.
#[derive(Debug, Clone, Copy)]
pub enum Str {
    /// Any string that is not empty.
    Any,
    /// Exactly one of these words.
    OneOf(&'static [&'static str]),
    /// A string `test` accepts; `what` describes it (`a repository name or pattern`).
    Like {
        what: &'static str,
        test: fn(&str) -> bool,
    },
}

impl Str {
    pub fn expected(&self) -> String {
        match self {
            Str::Any => "a string".into(),
            Str::OneOf(words) => format!("one of {}", words.join(", ")),
            Str::Like { what, .. } => what.to_string(),
        }
    }

    fn check(&self, text: &str) -> Result<(), String> {
        match self {
            _ if text.trim().is_empty() => Err(format!("{text:?} is empty")),
            Str::Any => Ok(()),
            Str::OneOf(words) if words.contains(&text) => Ok(()),
            Str::Like { test, .. } if test(text) => Ok(()),
            _ => Err(format!("{text:?} is not {}", self.expected())),
        }
    }
}

/// The type of a record's field: the settings' scalar kinds, strings, and lists and maps of
/// strings.
#[derive(Debug, Clone, Copy)]
pub enum Type {
    Duration {
        zero_ok: bool,
    },
    Size {
        min: u64,
        max: u64,
    },
    Count {
        min: u64,
        max: u64,
    },
    Bool,
    /// `HOST:PORT`.
    Address,
    Str(Str),
    /// A list of strings (`[pull, push]`).
    List(Str),
    /// A mapping of names to strings (`{Authorization: "Bearer x"}`); names are any string.
    Map(Str),
}

impl Type {
    /// The settings' kind that parses this type, for the scalar ones.
    fn kind(&self) -> Option<Kind> {
        Some(match *self {
            Type::Duration { zero_ok } => Kind::Duration { zero_ok },
            Type::Size { min, max } => Kind::Size { min, max },
            Type::Count { min, max } => Kind::Count { min, max },
            Type::Bool => Kind::Bool,
            Type::Address => Kind::Address { optional: false },
            Type::Str(_) | Type::List(_) | Type::Map(_) => return None,
        })
    }

    pub fn expected(&self) -> String {
        match self {
            Type::Str(s) => s.expected(),
            Type::List(s) => format!("a list (each item {})", s.expected()),
            Type::Map(s) => format!("a mapping of names (each value {})", s.expected()),
            t => t.kind().map_or("", |k| k.expected()).to_string(),
        }
    }

    /// Parses one scalar's text; lists and maps are parsed item by item by [`Field::read`].
    fn parse(&self, text: &str) -> Result<Datum, String> {
        let Some(kind) = self.kind() else {
            let (Type::Str(s) | Type::List(s) | Type::Map(s)) = self else {
                unreachable!("every other type has a kind")
            };
            return s.check(text).map(|()| Datum::Text(text.to_string()));
        };
        Ok(match kind.parse(text)? {
            Value::Duration(d) => Datum::Duration(d),
            Value::Count(n) => Datum::Number(n as u64),
            Value::Bool(b) => Datum::Bool(b),
            Value::Text(s) => Datum::Text(s),
            other => unreachable!("{other:?} from a record's kind"),
        })
    }
}

/// Whether a field must be given.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Absent means none: read it with [`Record::opt`].
    Optional,
    Required,
    /// Absent means this value, written as in the file (`30d`, `[pull]`).
    Default(&'static str),
}

/// One field of a record. Built with [`field`] and the `const` methods below, so a section's
/// table reads as one line per field.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: Type,
    pub doc: &'static str,
    pub need: Need,
    /// The value shown in the commented example record, written as in the file; the default's
    /// when none.
    pub example: Option<&'static str>,
    /// No two records of the section have the same value here (`name` of an endpoint).
    pub unique: bool,
}

/// An optional field without a default; see [`Field::required`], [`Field::default`].
pub const fn field(name: &'static str, ty: Type, doc: &'static str) -> Field {
    Field {
        name,
        ty,
        doc,
        need: Need::Optional,
        example: None,
        unique: false,
    }
}

impl Field {
    pub const fn required(mut self) -> Field {
        self.need = Need::Required;
        self
    }

    pub const fn default(mut self, yaml: &'static str) -> Field {
        self.need = Need::Default(yaml);
        self
    }

    pub const fn example(mut self, yaml: &'static str) -> Field {
        self.example = Some(yaml);
        self
    }

    pub const fn unique(mut self) -> Field {
        self.unique = true;
        self
    }

    /// What the example record shows: the example, else the default.
    fn shown(&self) -> Option<&'static str> {
        match (self.example, self.need) {
            (Some(e), _) | (None, Need::Default(e)) => Some(e),
            _ => None,
        }
    }

    /// `users: a list (each item a string); required`, for the docs.
    fn summary(&self) -> String {
        let need = match self.need {
            Need::Optional => "optional".to_string(),
            Need::Required => "required".to_string(),
            Need::Default(d) => format!("default {d}"),
        };
        format!("{}: {}; {need}.", self.name, self.ty.expected())
    }
}

/// Lists are read by position (`auth.access[2]`), maps by name (`notify.endpoints.ops`).
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    List,
    /// `names` checks each name; `example` is the name in the commented example.
    Map {
        names: Str,
        example: &'static str,
    },
}

/// A list or map of records at `key`, and how its records reach `C` (the [`Config`]).
pub struct Section<C: 'static> {
    pub key: &'static str,
    pub doc: &'static str,
    pub shape: Shape,
    pub fields: &'static [Field],
    /// Stores the records read (in file order) in their `C` field; called only for a section
    /// the file has, so `C::default()` holds when it has not.
    apply: fn(&mut C, &[Record]),
}

impl<C> Section<C> {
    pub const fn list(
        key: &'static str,
        doc: &'static str,
        fields: &'static [Field],
        apply: fn(&mut C, &[Record]),
    ) -> Section<C> {
        Section {
            key,
            doc,
            shape: Shape::List,
            fields,
            apply,
        }
    }

    /// A map from names to records; names are any string until [`Section::names`] says more.
    pub const fn map(
        key: &'static str,
        doc: &'static str,
        fields: &'static [Field],
        apply: fn(&mut C, &[Record]),
    ) -> Section<C> {
        Section {
            key,
            doc,
            shape: Shape::Map {
                names: Str::Any,
                example: "example",
            },
            fields,
            apply,
        }
    }

    pub const fn names(mut self, names: Str, example: &'static str) -> Section<C> {
        self.shape = Shape::Map { names, example };
        self
    }

    /// `RINGYARD_` and the key in capitals: the name of the variable it does not have.
    pub fn env(&self) -> String {
        format!("{}{}", super::env::PREFIX, super::env::upper(self.key))
    }

    /// `a list of records` or `a mapping of names to records`.
    pub fn what(&self) -> &'static str {
        match self.shape {
            Shape::List => "a list of records",
            Shape::Map { .. } => "a mapping of names to records",
        }
    }

    fn field_names(&self) -> String {
        let names: Vec<&str> = self.fields.iter().map(|f| f.name).collect();
        names.join(", ")
    }
}

/// A parsed field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Datum {
    Text(String),
    /// A count, or a size in bytes.
    Number(u64),
    Duration(Duration),
    Bool(bool),
    List(Vec<String>),
    Map(Vec<(String, String)>),
}

/// The Rust types a field is read as: [`Record::get`] and [`Record::opt`] pick the impl from
/// the struct field they fill.
pub trait FromDatum: Sized {
    fn from_datum(d: &Datum) -> Option<Self>;
}

macro_rules! from_datum {
    ($t:ty, $pat:pat => $e:expr) => {
        impl FromDatum for $t {
            fn from_datum(d: &Datum) -> Option<Self> {
                match d {
                    $pat => Some($e),
                    _ => None,
                }
            }
        }
    };
}
from_datum!(String, Datum::Text(s) => s.clone());
from_datum!(u64, Datum::Number(n) => *n);
from_datum!(usize, Datum::Number(n) => *n as usize);
from_datum!(Duration, Datum::Duration(d) => *d);
from_datum!(bool, Datum::Bool(b) => *b);
from_datum!(Vec<String>, Datum::List(v) => v.clone());
from_datum!(Vec<(String, String)>, Datum::Map(m) => m.clone());

/// One record as read, every field checked against its declaration; defaults filled in.
#[derive(Debug, Clone)]
pub struct Record {
    /// `auth.access[2]`, `notify.endpoints.ops`.
    pub path: String,
    pub line: usize,
    /// The record's name in a map section.
    name: Option<String>,
    fields: &'static [Field],
    /// Each field given or defaulted, with the line it came from.
    values: Vec<(&'static str, Datum, usize)>,
}

impl Record {
    /// The name of a record of a map section.
    pub fn name(&self) -> &str {
        self.name
            .as_deref()
            .unwrap_or_else(|| panic!("{}: a list's records have no name", self.path))
    }

    /// A required or defaulted field. Asking for a field the section does not declare, or as
    /// another type, is a bug in the declaration (the declarations' test finds it).
    pub fn get<T: FromDatum>(&self, name: &str) -> T {
        self.opt(name)
            .unwrap_or_else(|| panic!("{}.{name} is optional: read it with opt", self.path))
    }

    /// An optional field: None when the file does not give it.
    pub fn opt<T: FromDatum>(&self, name: &str) -> Option<T> {
        assert!(
            self.fields.iter().any(|f| f.name == name),
            "{}: no field {name} is declared",
            self.path
        );
        let (_, d, _) = self.values.iter().find(|(n, _, _)| *n == name)?;
        let t = T::from_datum(d).unwrap_or_else(|| {
            panic!(
                "{}.{name} is {d:?}, not a {}",
                self.path,
                std::any::type_name::<T>()
            )
        });
        Some(t)
    }

    fn value(&self, name: &str) -> Option<(&Datum, usize)> {
        let (_, d, line) = self.values.iter().find(|(n, _, _)| *n == name)?;
        Some((d, *line))
    }
}

/// A section the file has, with its records, to be stored once the whole configuration is
/// known to be good.
pub struct Filled<C: 'static> {
    section: &'static Section<C>,
    pub records: Vec<Record>,
}

impl<C> Filled<C> {
    pub fn apply(&self, c: &mut C) {
        (self.section.apply)(c, &self.records)
    }
}

/// Where problems go while a section is read.
pub(super) struct Problems<'a> {
    pub at: &'a dyn Fn(usize) -> Origin,
    pub errors: &'a mut Vec<ConfigError>,
}

impl Problems<'_> {
    fn add(&mut self, line: usize, path: &str, message: String) {
        self.errors
            .push(ConfigError::new((self.at)(line), Some(path), message));
    }
}

fn line_of_node(node: &Node) -> Option<usize> {
    node.span().start().map(|m| m.line())
}

/// `.ops` for a plain name, `["my hook"]` for any other.
fn child(path: &str, name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
    if plain {
        format!("{path}.{name}")
    } else {
        format!("{path}[{name:?}]")
    }
}

impl<C> Section<C> {
    /// Reads the section's `node` (its key on `line`) into records; every problem goes to `p`,
    /// and reading goes on past it.
    pub(super) fn read(&'static self, node: &Node, line: usize, p: &mut Problems) -> Filled<C> {
        let mut records = Vec::new();
        match (self.shape, node) {
            // every record commented out
            (_, Node::Scalar(s)) if is_null(s) => {}
            (Shape::List, Node::Sequence(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{}[{i}]", self.key);
                    let line = line_of_node(item).unwrap_or(line);
                    records.extend(self.record(None, path, item, line, p));
                }
            }
            (Shape::Map { names, .. }, Node::Mapping(map)) => {
                for (k, v) in map.iter() {
                    let path = child(self.key, k.as_str());
                    let line = line_of(k);
                    match names.check(k.as_str()) {
                        Ok(()) => {
                            let name = Some(k.as_str().to_string());
                            records.extend(self.record(name, path, v, line, p));
                        }
                        Err(e) => p.add(line, &path, format!("the name: {e}")),
                    }
                }
            }
            (_, other) => p.add(
                line,
                self.key,
                format!(
                    "expected {} ({}), found {}",
                    self.what(),
                    self.field_names(),
                    what(other)
                ),
            ),
        }
        self.check_unique(&records, p);
        Filled {
            section: self,
            records: records
                .into_iter()
                .filter_map(|(r, ok)| ok.then_some(r))
                .collect(),
        }
    }

    /// One record, with whether it is whole (no problem, all reported, in the fields it has);
    /// None when it is not even a mapping.
    fn record(
        &self,
        name: Option<String>,
        path: String,
        node: &Node,
        line: usize,
        p: &mut Problems,
    ) -> Option<(Record, bool)> {
        let Node::Mapping(map) = node else {
            let names = self.field_names();
            let found = what(node);
            p.add(
                line,
                &path,
                format!("expected a record ({names}), found {found}"),
            );
            return None;
        };
        let problems = p.errors.len();
        let mut values = Vec::new();
        for (k, v) in map.iter() {
            let fpath = format!("{path}.{}", k.as_str());
            let fline = line_of(k);
            match self.fields.iter().find(|f| f.name == k.as_str()) {
                Some(f) => values.extend(f.read(v, &fpath, fline, p).map(|d| (f.name, d, fline))),
                None => {
                    let known = self.fields.iter().map(|f| f.name);
                    let hint = match closest(k.as_str(), known) {
                        Some(best) => format!(" (did you mean {path}.{best}?)"),
                        None => format!(" (known here: {})", self.field_names()),
                    };
                    p.add(fline, &fpath, format!("unknown field{hint}"));
                }
            }
        }
        for f in self.fields {
            if map.get_node(f.name).is_some() {
                continue;
            }
            match f.need {
                Need::Optional => {}
                Need::Required => p.add(
                    line,
                    &path,
                    format!("missing {} ({})", f.name, f.ty.expected()),
                ),
                Need::Default(yaml) => values.push((f.name, f.default_value(yaml), line)),
            }
        }
        let record = Record {
            path,
            line,
            name,
            fields: self.fields,
            values,
        };
        Some((record, p.errors.len() == problems))
    }

    /// Two records with the same value in a `unique` field: the second is an error.
    fn check_unique(&self, records: &[(Record, bool)], p: &mut Problems) {
        let records: Vec<&Record> = records.iter().map(|(r, _)| r).collect();
        for f in self.fields.iter().filter(|f| f.unique) {
            for (i, r) in records.iter().enumerate() {
                let Some((d, line)) = r.value(f.name) else {
                    continue;
                };
                let first = records[..i]
                    .iter()
                    .find(|o| o.value(f.name).map(|v| v.0) == Some(d));
                if let (Some(first), Datum::Text(t)) = (first, d) {
                    let message = format!(
                        "{t:?} again (first in {} on line {})",
                        first.path, first.line
                    );
                    p.add(line, &format!("{}.{}", r.path, f.name), message);
                }
            }
        }
    }
}

impl Field {
    /// Reads `node`, the value of this field at `path` (its key on `line`).
    fn read(&self, node: &Node, path: &str, line: usize, p: &mut Problems) -> Option<Datum> {
        match (self.ty, node) {
            (Type::List(_), Node::Sequence(items)) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let line = line_of_node(item).unwrap_or(line);
                    if let Some(Datum::Text(s)) =
                        self.scalar(item, &format!("{path}[{i}]"), line, p)
                    {
                        out.push(s);
                    }
                }
                (out.len() == items.len()).then_some(Datum::List(out))
            }
            (Type::Map(_), Node::Mapping(map)) => self.read_map(map, path, p),
            (Type::List(_) | Type::Map(_), other) => {
                let message = match other {
                    Node::Scalar(s) if is_null(s) => self.no_value(),
                    _ => format!("expected {}, found {}", self.ty.expected(), what(other)),
                };
                p.add(line, path, message);
                None
            }
            _ => self.scalar(node, path, line, p),
        }
    }

    /// For a field given as `key:` with nothing after it.
    fn no_value(&self) -> String {
        let or = match self.need {
            Need::Required => "",
            Need::Optional => " or remove the line",
            Need::Default(_) => " or remove the line for the default",
        };
        format!("no value; write {}{or}", self.ty.expected())
    }

    fn read_map(&self, map: &MarkedMappingNode, path: &str, p: &mut Problems) -> Option<Datum> {
        let mut out = Vec::new();
        for (k, v) in map.iter() {
            let line = line_of(k);
            if let Some(Datum::Text(s)) = self.scalar(v, &child(path, k.as_str()), line, p) {
                out.push((k.as_str().to_string(), s));
            }
        }
        (out.len() == map.len()).then_some(Datum::Map(out))
    }

    /// One scalar: the field's own value, or an item of its list or map.
    fn scalar(&self, node: &Node, path: &str, line: usize, p: &mut Problems) -> Option<Datum> {
        let (item, item_of_many) = match self.ty {
            Type::List(s) | Type::Map(s) => (Type::Str(s), true),
            t => (t, false),
        };
        let expected = item.expected();
        let message = match node {
            Node::Scalar(v) if is_null(v) && item_of_many => format!("no value; write {expected}"),
            Node::Scalar(v) if is_null(v) => self.no_value(),
            Node::Scalar(v) if !v.may_coerce() && item.kind().is_some_and(|k| k.wants_plain()) => {
                let text = v.as_str();
                format!("expected {expected}, found the string {text:?} (write it without quotes)")
            }
            Node::Scalar(v) => match item.parse(v.as_str()) {
                Ok(d) => return Some(d),
                Err(e) => e,
            },
            other => format!("expected {expected}, found {}", what(other)),
        };
        p.add(line, path, message);
        None
    }

    /// The declared default, read as if it were in the file; it is checked by the
    /// declarations' test, so a bad one is a bug here.
    fn default_value(&self, yaml: &str) -> Datum {
        let text = format!("v: {yaml}");
        let root = marked_yaml::parse_yaml(0, &text)
            .unwrap_or_else(|e| panic!("{}: default {yaml:?}: {e}", self.name));
        let node = root.as_mapping().and_then(|m| m.get_node("v")).expect("v");
        // the problems only go into the panic message below
        let at = |_| Origin::Flag(self.name.to_string());
        let mut errors = Vec::new();
        let mut p = Problems {
            at: &at,
            errors: &mut errors,
        };
        let d = self.read(node, self.name, 1, &mut p);
        d.unwrap_or_else(|| panic!("{}: default {yaml:?}: {errors:?}", self.name))
    }
}

impl<C> Section<C> {
    /// The section in `config defaults`, `depth` levels in: its doc and fields as comments,
    /// the key with no records (so the file changes nothing), and a commented example record.
    pub(super) fn defaults(&self, depth: usize) -> String {
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
    fn example(&self, minimal: bool) -> String {
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

#[cfg(test)]
mod tests;
