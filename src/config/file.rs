//! The YAML file: text in, assignments out, every problem with the file name and line. The
//! structure (sections, key names, scalar or mapping, YAML strings where a number or boolean
//! belongs) is checked here; the values themselves by the settings table when resolved. A key
//! declared as a list or map of records is handed, node and all, to its [`Section`].

use super::section::{Filled, Problems, Section, SECTIONS};
use super::settings::{self, Setting, SETTINGS};
use super::source::{Assignment, ConfigError, Origin};
use super::value::closest;
use super::Config;
use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode};
use marked_yaml::{LoadError, LoaderOptions, Node};

/// What a file holds: assignments of settings, the sections of records it has, and the
/// problems of its structure and records (the assignments of a file with problems are still
/// worth checking: every mistake is reported at once).
pub type Parsed<C> = (Vec<Assignment>, Vec<Filled<C>>, Vec<ConfigError>);

/// Reads the file `path` holding `text`, with the product's sections.
pub fn parse(path: &str, text: &str) -> Parsed<Config> {
    parse_with(path, text, SECTIONS)
}

/// Reads the file `path` holding `text`, with `sections` (the tests declare their own).
pub fn parse_with<C>(path: &str, text: &str, sections: &'static [Section<C>]) -> Parsed<C> {
    let keys: Vec<&'static str> = SETTINGS
        .iter()
        .map(|s| s.key)
        .chain(sections.iter().map(|s| s.key))
        .collect();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let at = |line: usize| Origin::File {
        path: path.to_string(),
        line: Some(line),
    };
    if let Some(line) = second_document(text) {
        let e = ConfigError::new(
            at(line),
            None,
            "a second YAML document (---); the configuration is one document",
        );
        return (Vec::new(), Vec::new(), vec![e]);
    }
    if !has_content(text) {
        // comments and document markers only (`---`): nothing set, as for an empty file
        return (Vec::new(), Vec::new(), Vec::new());
    }
    let options = LoaderOptions::default()
        .error_on_duplicate_keys(true)
        .prevent_coercion(true);
    let root = match marked_yaml::parse_yaml_with_options(0, text, options) {
        Ok(root) => root,
        Err(e) => {
            return (
                Vec::new(),
                Vec::new(),
                vec![load_error(&at, text, e, &keys)],
            )
        }
    };
    let mut reader = Reader {
        at: &at,
        keys: &keys,
        sections,
        out: Vec::new(),
        filled: Vec::new(),
        errors: Vec::new(),
    };
    match &root {
        Node::Mapping(m) => reader.section(m, ""),
        // the loader insists on a mapping at the top; this is for completeness
        _ => reader
            .errors
            .push(ConfigError::new(at(1), None, not_a_config(&keys))),
    }
    (reader.out, reader.filled, reader.errors)
}

fn not_a_config(keys: &[&'static str]) -> String {
    format!(
        "not a ringyard configuration: the top level must be a mapping of sections ({})",
        children("", keys).join(", ")
    )
}

const IPV6_QUOTES: &str = " (an IPv6 address needs quotes: \"[::]:5000\")";

/// `e` at its line; one found at the very end (an unclosed bracket) is shown on the last line
/// of `text`.
fn load_error(
    at: &dyn Fn(usize) -> Origin,
    text: &str,
    e: LoadError,
    keys: &[&'static str],
) -> ConfigError {
    let lines = text.lines().count();
    let (line, message) = match e {
        LoadError::TopLevelMustBeMapping(m) | LoadError::TopLevelMustBeSequence(m) => {
            (m.line(), not_a_config(keys))
        }
        LoadError::ScanError(m, e) if m.line() > lines => (
            lines.max(1),
            format!("not valid YAML: {} (at the end of the file)", e.info()),
        ),
        LoadError::ScanError(m, e) => {
            let source = text.lines().nth(m.line().saturating_sub(1)).unwrap_or("");
            let hint = if source.contains('[') && source.contains("]:") {
                IPV6_QUOTES
            } else {
                ""
            };
            let (info, col) = (e.info(), m.column());
            (
                m.line(),
                format!("not valid YAML: {info} (column {col}){hint}"),
            )
        }
        LoadError::UnexpectedAnchor(m) => (
            m.line(),
            "YAML anchors and aliases (&, *) are not supported".into(),
        ),
        LoadError::UnexpectedTag(m) => {
            (m.line(), "YAML tags (!!str, ...) are not supported".into())
        }
        LoadError::MappingKeyMustBeScalar(m) => (m.line(), "a key must be a plain name".into()),
        LoadError::DuplicateKey(d) => (
            line_of(&d.key),
            format!(
                "{:?} again (first on line {})",
                d.key.as_str(),
                line_of(&d.prev_key)
            ),
        ),
    };
    ConfigError::new(at(line), None, message)
}

fn is_document_marker(line: &str) -> bool {
    let rest = line
        .strip_prefix("---")
        .or_else(|| line.strip_prefix("..."));
    rest.is_some_and(|r| r.is_empty() || r.starts_with([' ', '\t']))
}

/// Whether `line` holds more than blanks, a comment, a directive or a document marker.
fn is_content(line: &str) -> bool {
    let t = line.trim();
    !(t.is_empty() || t.starts_with('#') || t.starts_with('%') || is_document_marker(line))
}

fn has_content(text: &str) -> bool {
    text.lines().any(is_content)
}

/// The line of a `---` that starts a second document, if any.
fn second_document(text: &str) -> Option<usize> {
    let mut content = false;
    for (i, line) in text.lines().enumerate() {
        if content && line.starts_with("---") && is_document_marker(line) {
            return Some(i + 1);
        }
        content |= is_content(line);
    }
    None
}

/// The names directly under `prefix` (`""`: the sections) among `keys`, in table order.
fn children(prefix: &str, keys: &[&'static str]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for &key in keys {
        let rest = if prefix.is_empty() {
            Some(key)
        } else {
            key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.'))
        };
        if let Some(name) = rest.and_then(|r| r.split('.').next()) {
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

struct Reader<'a, C: 'static> {
    at: &'a dyn Fn(usize) -> Origin,
    /// Every setting's and section's key.
    keys: &'a [&'static str],
    sections: &'static [Section<C>],
    out: Vec<Assignment>,
    filled: Vec<Filled<C>>,
    errors: Vec<ConfigError>,
}

pub(super) fn line_of(key: &MarkedScalarNode) -> usize {
    key.span().start().map_or(1, |m| m.line())
}

pub(super) fn what(node: &Node) -> &'static str {
    match node {
        Node::Mapping(_) => "a mapping",
        Node::Sequence(_) => "a list",
        Node::Scalar(_) => "a single value",
    }
}

/// A plain `~`, `null` or nothing at all.
pub(super) fn is_null(s: &MarkedScalarNode) -> bool {
    s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL")
}

impl<C> Reader<'_, C> {
    fn error(&mut self, line: usize, key: &str, message: String) {
        self.errors
            .push(ConfigError::new((self.at)(line), Some(key), message));
    }

    fn section(&mut self, map: &MarkedMappingNode, prefix: &str) {
        for (k, v) in map.iter() {
            let line = line_of(k);
            let key = if prefix.is_empty() {
                k.as_str().to_string()
            } else {
                format!("{prefix}.{}", k.as_str())
            };
            let group = format!("{key}.");
            if let Some(s) = settings::find(&key) {
                self.value(s, line, v);
            } else if let Some(s) = self.sections.iter().find(|s| s.key == key) {
                let mut problems = Problems {
                    at: self.at,
                    errors: &mut self.errors,
                };
                self.filled.push(s.read(v, line, &mut problems));
            } else if self.keys.iter().any(|k| k.starts_with(&group)) {
                match v {
                    Node::Mapping(m) => self.section(m, &key),
                    // a section whose settings are all commented out
                    Node::Scalar(s) if is_null(s) => {}
                    other => {
                        let names = children(&key, self.keys).join(", ");
                        self.error(
                            line,
                            &key,
                            format!(
                                "expected a mapping of settings ({names}), found {}",
                                what(other)
                            ),
                        )
                    }
                }
            } else {
                let known = children(prefix, self.keys);
                let here: Vec<String> = known
                    .iter()
                    .map(|c| {
                        if prefix.is_empty() {
                            c.to_string()
                        } else {
                            format!("{prefix}.{c}")
                        }
                    })
                    .collect();
                let hint = did_you_mean(k.as_str(), here.iter().map(String::as_str));
                let what = if prefix.is_empty() { "section" } else { "key" };
                let hint = if hint.is_empty() {
                    format!(" (known here: {})", known.join(", "))
                } else {
                    hint
                };
                self.error(line, &key, format!("unknown {what}{hint}"));
            }
        }
    }

    fn value(&mut self, s: &'static Setting, line: usize, node: &Node) {
        let Node::Scalar(v) = node else {
            let quote = match (s.kind, node) {
                (settings::Kind::Address { .. }, Node::Sequence(_)) => IPV6_QUOTES,
                _ => "",
            };
            return self.error(
                line,
                s.key,
                format!("expected {}, found {}{quote}", s.expected(), what(node)),
            );
        };
        let text = if is_null(v) {
            if !s.kind.optional() {
                return self.error(
                    line,
                    s.key,
                    format!(
                        "no value; write {} or remove the line for the default",
                        s.expected()
                    ),
                );
            }
            String::new()
        } else {
            v.as_str().to_string()
        };
        if !v.may_coerce() && s.wants_plain() {
            return self.error(
                line,
                s.key,
                format!(
                    "expected {}, found the string {text:?} (write it without quotes)",
                    s.expected()
                ),
            );
        }
        self.out.push(Assignment {
            setting: s,
            text,
            origin: (self.at)(line),
        });
    }
}

/// A hint for a key that does not exist: the setting with the same last part elsewhere, or
/// the closest name among `candidates` (full keys or names).
pub fn did_you_mean<'a>(leaf: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let same_leaf: Vec<&str> = settings::SETTINGS
        .iter()
        .map(|s| s.key)
        .filter(|k| settings::leaf(k) == leaf)
        .collect();
    if !same_leaf.is_empty() {
        return format!(" (did you mean {}?)", same_leaf.join(" or "));
    }
    let candidates: Vec<&str> = candidates.into_iter().collect();
    match closest(leaf, candidates.iter().map(|c| settings::leaf(c))) {
        Some(best) => {
            let full = candidates
                .iter()
                .find(|c| settings::leaf(c) == best)
                .unwrap_or(&best);
            format!(" (did you mean {full}?)")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::source::resolve;
    use crate::config::Config;
    use std::time::Duration;

    fn load(text: &str) -> Result<Config, Vec<String>> {
        let (assignments, _, mut errors) = parse("ringyard.yaml", text);
        match resolve(assignments) {
            Ok(cfg) if errors.is_empty() => return Ok(cfg),
            Ok(_) => {}
            Err(e) => errors.extend(e),
        }
        Err(errors.iter().map(|e| e.to_string()).collect())
    }

    fn one_error(text: &str) -> String {
        let errs = load(text).expect_err(text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs[0].clone()
    }

    #[test]
    fn the_documented_layout_loads() {
        let cfg = load(
            "http:\n  listen: 127.0.0.1:5050\n  workers: 3\n  max_connections: 7\n  max_header_size: 32KiB\n  timeouts:\n    head: 5s\n    idle: 2m\n    body: 1m30s\n    shutdown_grace: 0\nstorage:\n  root: /var/lib/ringyard\n  delete: false\n  read_only: true\n  upload_expiry: 30m\n  max_manifest_size: 1MiB\nlog:\n  level: debug\n  format: json\n  access: false\nmetrics:\n  enabled: false\n  listen: \"[::1]:9090\"\n",
        )
        .unwrap();
        assert_eq!(cfg.listen, "127.0.0.1:5050");
        assert_eq!(cfg.workers, 3);
        assert_eq!(cfg.max_connections, 7);
        assert_eq!(cfg.max_header_bytes, 32 * 1024);
        assert_eq!(cfg.head_timeout, Duration::from_secs(5));
        assert_eq!(cfg.idle_timeout, Duration::from_secs(120));
        assert_eq!(cfg.body_timeout, Duration::from_secs(90));
        assert_eq!(cfg.shutdown_grace, Duration::ZERO);
        assert_eq!(cfg.root, std::path::PathBuf::from("/var/lib/ringyard"));
        assert!(!cfg.delete_enabled && cfg.read_only);
        assert_eq!(cfg.upload_expiry, Duration::from_secs(1800));
        assert_eq!(cfg.max_manifest_bytes, 1 << 20);
        assert_eq!(cfg.log_level, crate::config::LogLevel::Debug);
        assert_eq!(cfg.log_format, crate::config::LogFormat::Json);
        assert!(!cfg.access_log && !cfg.metrics_enabled);
        assert_eq!(cfg.metrics_listen.as_deref(), Some("[::1]:9090"));
    }

    #[test]
    fn empty_files_and_sections_are_the_defaults() {
        let d = Config::default();
        assert_eq!(load("").unwrap(), d);
        assert_eq!(load("# nothing yet\n").unwrap(), d);
        assert_eq!(load("http:\nstorage:\n  # root: x\nlog: ~\n").unwrap(), d);
        assert_eq!(load("\u{feff}metrics:\n  listen:\n").unwrap(), d);
        assert_eq!(load("---\nhttp:\n  workers: 0\n...\n").unwrap(), d);
        assert_eq!(load("---\n# all commented out\n").unwrap(), d);
        assert_eq!(load("%YAML 1.2\n---\n...\n").unwrap(), d);
    }

    #[test]
    fn defaults_output_loads_to_the_defaults() {
        let text = settings::defaults_file();
        assert_eq!(load(&text).unwrap(), Config::default());
        for s in SETTINGS {
            let leaf = settings::leaf(s.key);
            assert!(
                text.contains(&format!(" {leaf}: ")),
                "{} missing:\n{text}",
                s.key
            );
            assert!(text.contains(&s.env()), "{} missing", s.env());
        }
    }

    /// The example in the README's Configuration section is a valid file.
    #[test]
    fn readme_example_loads() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("## Configuration").expect("the section")..];
        let start = section.find("```yaml\n").expect("a yaml example") + 8;
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let cfg = load(example).unwrap_or_else(|e| panic!("{e:?}\n{example}"));
        assert_eq!(cfg.listen, "0.0.0.0:5000");
        assert_eq!(cfg.log_format, crate::config::LogFormat::Json);
    }

    #[test]
    fn unknown_keys_name_the_line_and_suggest() {
        assert_eq!(
            one_error("http:\n  listen: localhost:5000\n  lissten: x\n"),
            "ringyard.yaml:3: http.lissten: unknown key (did you mean http.listen?)"
        );
        assert_eq!(
            one_error("storge:\n  root: x\n"),
            "ringyard.yaml:1: storge: unknown section (did you mean storage?)"
        );
        assert_eq!(
            one_error("http:\n  root: /data\n"),
            "ringyard.yaml:2: http.root: unknown key (did you mean storage.root?)"
        );
        assert_eq!(
            one_error("http:\n  timeouts:\n    read: 5s\n"),
            "ringyard.yaml:3: http.timeouts.read: unknown key (did you mean http.timeouts.head?)"
        );
        assert_eq!(
            one_error("http:\n  timeouts:\n    slowloris: 5s\n"),
            "ringyard.yaml:3: http.timeouts.slowloris: unknown key (known here: head, idle, body, shutdown_grace)"
        );
        assert_eq!(
            one_error("auht:\n  htpasswd: x\n"),
            "ringyard.yaml:1: auht: unknown section (did you mean auth?)"
        );
    }

    #[test]
    fn wrong_types() {
        assert_eq!(
            one_error("storage:\n  delete: \"no\"\n"),
            r#"ringyard.yaml:2: storage.delete: expected true or false, found the string "no" (write it without quotes)"#
        );
        assert_eq!(
            one_error("storage:\n  read_only: sometimes\n"),
            r#"ringyard.yaml:2: storage.read_only: "sometimes" is not true or false"#
        );
        assert_eq!(
            one_error("http:\n  listen:\n    host: x\n"),
            "ringyard.yaml:2: http.listen: expected a HOST:PORT address, found a mapping"
        );
        assert_eq!(
            one_error("http:\n  workers: [1, 2]\n"),
            "ringyard.yaml:2: http.workers: expected a whole number, found a list"
        );
        assert_eq!(
            one_error("http:\n  listen: [::]:5000\n"),
            r#"ringyard.yaml:2: not valid YAML: while parsing a block mapping, did not find expected key (column 15) (an IPv6 address needs quotes: "[::]:5000")"#
        );
        assert_eq!(
            one_error("metrics:\n  listen: [::1]\n"),
            r#"ringyard.yaml:2: metrics.listen: expected a HOST:PORT address, found a list (an IPv6 address needs quotes: "[::]:5000")"#
        );
        assert_eq!(
            one_error("http:\n  workers: \"4\"\n"),
            r#"ringyard.yaml:2: http.workers: expected a whole number, found the string "4" (write it without quotes)"#
        );
        assert_eq!(
            one_error("log: debug\n"),
            "ringyard.yaml:1: log: expected a mapping of settings (level, format, access), found a single value"
        );
        assert_eq!(
            one_error("http:\n  timeouts: 5s\n"),
            "ringyard.yaml:2: http.timeouts: expected a mapping of settings (head, idle, body, shutdown_grace), found a single value"
        );
        assert_eq!(
            one_error("http:\n  listen:\n"),
            "ringyard.yaml:2: http.listen: no value; write a HOST:PORT address or remove the line for the default"
        );
        // quoted durations and sizes are fine: they are strings in YAML anyway
        assert!(load("http:\n  timeouts:\n    head: \"5s\"\n  max_header_size: '8KiB'\n").is_ok());
    }

    #[test]
    fn bad_values_name_key_and_line() {
        assert_eq!(
            one_error(
                "http:\n  listen: localhost:5000\n\n  timeouts:\n    idle: 1m\n\n    head: 5x\n"
            ),
            r#"ringyard.yaml:7: http.timeouts.head: "5x" is not a duration (use 30s, 5m, 1h)"#
        );
        assert_eq!(
            one_error("storage:\n  max_manifest_size: huge\n"),
            r#"ringyard.yaml:2: storage.max_manifest_size: "huge" is not a size (use 1024, 512KiB, 4MiB, 10GB)"#
        );
        assert_eq!(
            one_error("http:\n  timeouts:\n    body: 0s\n"),
            r#"ringyard.yaml:3: http.timeouts.body: "0s" is zero; this must be longer"#
        );
        assert_eq!(
            one_error("http:\n  max_header_size: 2MiB\n"),
            r#"ringyard.yaml:2: http.max_header_size: "2MiB" is more than the maximum of 1MiB"#
        );
        assert_eq!(
            one_error("http:\n  listen: nowhere\n"),
            r#"ringyard.yaml:2: http.listen: "nowhere" is not HOST:PORT (use HOST:PORT, e.g. localhost:5000, 0.0.0.0:5000, [::]:5000)"#
        );
        assert_eq!(
            one_error("log:\n  level: loud\n"),
            r#"ringyard.yaml:2: log.level: "loud" is not a log level (use error, warn, info, debug)"#
        );
        // every problem at once
        let errs = load("http:\n  workers: 5000\n  bogus: 1\nlog:\n  format: xml\n").unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    #[test]
    fn broken_yaml() {
        assert_eq!(
            one_error("http:\n  listen: [1, 2\n"),
            "ringyard.yaml:2: not valid YAML: while parsing a flow sequence, expected ',' or ']' (at the end of the file)"
        );
        assert!(one_error("just some text\n").starts_with(
            "ringyard.yaml:1: not a ringyard configuration: the top level must be a mapping of sections (http, storage, database, log, metrics, auth, gc, scan, tags, retention, quotas)"
        ));
        assert!(one_error("- http\n- storage\n").contains("not a ringyard configuration"));
        assert_eq!(
            one_error("http:\n  workers: 1\n  workers: 2\n"),
            r#"ringyard.yaml:3: "workers" again (first on line 2)"#
        );
        assert!(one_error("http:\n  listen: &a x\n").contains("anchors"));
        assert!(one_error("http:\n  listen: !!str x\n").contains("tags"));
        assert_eq!(
            one_error("http:\n  workers: 1\n---\nhttp:\n  workers: 2\n"),
            "ringyard.yaml:3: a second YAML document (---); the configuration is one document"
        );
        assert_eq!(
            one_error("{\"http\": {\"listen\": "),
            "ringyard.yaml:1: not valid YAML: while parsing a node, did not find expected node content (at the end of the file)"
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("root", ["http.listen"]),
            " (did you mean storage.root?)"
        );
        assert_eq!(
            did_you_mean("listen", []),
            " (did you mean http.listen or metrics.listen?)"
        );
        assert_eq!(
            did_you_mean("lissten", ["http.listen", "http.workers"]),
            " (did you mean http.listen?)"
        );
        assert_eq!(
            did_you_mean("storge", ["http", "storage"]),
            " (did you mean storage?)"
        );
        assert_eq!(did_you_mean("zzz", ["http", "storage"]), "");
    }
}
