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

use super::settings::{Kind, Value};
use super::Config;
use std::time::Duration;

/// Every section of records, in the order `config defaults` shows them among the settings:
/// the access rules and their groups ([`super::auth`]), the external token issuers
/// ([`super::token`]); notification endpoints and retention policies will declare theirs here.
pub static SECTIONS: &[Section<Config>] = &[
    super::auth::ACCESS,
    super::auth::GROUPS,
    super::token::EXTERNAL,
    super::lifecycle::IMMUTABLE,
    super::lifecycle::RETENTION,
    super::lifecycle::QUOTAS,
    super::scan::POLICIES,
    super::scan::ALLOWLIST,
    super::scan::WEBHOOKS,
];

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

mod docs;
mod read;
pub use docs::markdown;
pub(super) use read::Problems;

#[cfg(test)]
mod tests;
