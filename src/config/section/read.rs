//! Reading a section's YAML node into [`Record`]s: shapes, field names and types checked
//! against the declaration, defaults filled in, duplicates of `unique` fields found, and every
//! problem reported with its line and full path, reading on past it.

use super::{Datum, Field, Filled, Need, Record, Section, Shape, Type};
use crate::config::file::{is_null, line_of, what};
use crate::config::source::{ConfigError, Origin};
use crate::config::value::closest;
use marked_yaml::types::MarkedMappingNode;
use marked_yaml::Node;

/// Where problems go while a section is read.
pub(in crate::config) struct Problems<'a> {
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
    pub(in crate::config) fn read(
        &'static self,
        node: &Node,
        line: usize,
        p: &mut Problems,
    ) -> Filled<C> {
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
    pub(super) fn default_value(&self, yaml: &str) -> Datum {
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
