//! The model proven on a schema of its own, apart from the product's sections (the access
//! rules of [`crate::config::auth`]): these tests declare a list section (`auth.access`, after
//! the settings of its group) and a map section (`storage.mirrors`, beside scalar settings) with
//! every field type, and read files with them through the real reader. [`lint`] holds every declaration to its promises; it runs on
//! [`SECTIONS`] too, so a section a feature adds is checked without a test of its own.

use super::*;
use crate::config::file::parse_with;
use crate::config::settings::{defaults_file, defaults_file_with, SETTINGS};
use crate::config::source::resolve;
use crate::config::{env, Config};
use std::collections::HashSet;

#[derive(Debug, Default, PartialEq)]
struct Schema {
    rules: Vec<Rule>,
    mirrors: Vec<Mirror>,
}

#[derive(Debug, PartialEq)]
struct Rule {
    repository: String,
    users: Vec<String>,
    actions: Vec<String>,
    expires: Option<Duration>,
    audit: bool,
}

#[derive(Debug, PartialEq)]
struct Mirror {
    name: String,
    address: String,
    headers: Vec<(String, String)>,
    events: Vec<String>,
    timeout: Duration,
    retries: u64,
    max_body: Option<usize>,
    enabled: bool,
}

const REPOSITORY: Str = Str::Like {
    what: "a repository name or pattern (lowercase letters, digits, ._-/ and *)",
    test: |s| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/*".contains(&b))
    },
};

const MIRROR_NAME: Str = Str::Like {
    what: "a name of lowercase letters, digits and -",
    test: |s| {
        s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    },
};

static TEST: &[Section<Schema>] = &[
    Section::list(
        "auth.access",
        "Who may do what where; the first rule whose repository matches decides.",
        &[
            field(
                "repository",
                Type::Str(REPOSITORY),
                "A repository name, or a pattern where * stands for any part.",
            )
            .required()
            .unique()
            .example("\"ci/*\""),
            field("users", Type::List(Str::Any), "The users the rule is for.")
                .required()
                .example("[ci-bot, alice]"),
            field(
                "actions",
                Type::List(Str::OneOf(&["pull", "push", "delete"])),
                "What they may do.",
            )
            .default("[pull]")
            .example("[pull, push]"),
            field(
                "expires",
                Type::Duration { zero_ok: false },
                "The rule ends this long after the start.",
            )
            .example("90d"),
            field("audit", Type::Bool, "Log every use of the rule.").default("false"),
        ],
        |c, records| {
            c.rules = records
                .iter()
                .map(|r| Rule {
                    repository: r.get("repository"),
                    users: r.get("users"),
                    actions: r.get("actions"),
                    expires: r.opt("expires"),
                    audit: r.get("audit"),
                })
                .collect()
        },
    ),
    Section::map(
        "storage.mirrors",
        "Registries that get a copy of every push.",
        &[
            field("address", Type::Address, "Where the mirror listens.")
                .required()
                .example("mirror.local:5000"),
            field(
                "headers",
                Type::Map(Str::Any),
                "Headers sent with every request.",
            )
            .default("{}")
            .example("{Authorization: \"Bearer token\"}"),
            field(
                "events",
                Type::List(Str::OneOf(&["push", "delete"])),
                "What is copied.",
            )
            .default("[push]"),
            field(
                "timeout",
                Type::Duration { zero_ok: false },
                "A request that takes longer fails.",
            )
            .default("5s"),
            field(
                "retries",
                Type::Count { min: 0, max: 10 },
                "Retries of a failed request.",
            )
            .default("3"),
            field(
                "max_body",
                Type::Size {
                    min: 1024,
                    max: 1 << 30,
                },
                "Larger blobs are not copied.",
            )
            .example("512MiB"),
            field(
                "enabled",
                Type::Bool,
                "false keeps the mirror declared but idle.",
            )
            .default("true"),
        ],
        |c: &mut Schema, records| {
            c.mirrors = records
                .iter()
                .map(|r| Mirror {
                    name: r.name().to_string(),
                    address: r.get("address"),
                    headers: r.get("headers"),
                    events: r.get("events"),
                    timeout: r.get("timeout"),
                    retries: r.get("retries"),
                    max_body: r.opt("max_body"),
                    enabled: r.get("enabled"),
                })
                .collect()
        },
    )
    .names(MIRROR_NAME, "backup"),
];

/// `text` read with the test schema: the scalars resolved, the sections applied, or every
/// problem as printed.
fn load(text: &str) -> Result<(Config, Schema), Vec<String>> {
    let (assignments, filled, mut errors) = parse_with("ringyard.yaml", text, TEST);
    match resolve(assignments) {
        Ok(cfg) if errors.is_empty() => {
            let mut schema = Schema::default();
            for f in &filled {
                f.apply(&mut schema);
            }
            return Ok((cfg, schema));
        }
        Ok(_) => {}
        Err(e) => errors.extend(e),
    }
    Err(errors.iter().map(|e| e.to_string()).collect())
}

fn schema(text: &str) -> Schema {
    load(text).unwrap_or_else(|e| panic!("{e:#?}\n{text}")).1
}

fn errors(text: &str) -> Vec<String> {
    load(text).expect_err(text)
}

/// `body` (starting with the section's last key part) under the groups of `key`.
fn nested(key: &str, body: &str) -> String {
    let groups: Vec<&str> = key.split('.').collect();
    let groups = &groups[..groups.len() - 1];
    let mut out = String::new();
    for (depth, g) in groups.iter().enumerate() {
        out.push_str(&format!("{}{g}:\n", "  ".repeat(depth)));
    }
    for line in body.lines() {
        out.push_str(&format!("{}{line}\n", "  ".repeat(groups.len())));
    }
    out
}

/// What every declaration promises: well-formed and unique keys and names, keys apart from the
/// settings', every default and example valid, and `apply` reading every field as declared
/// (a `get` of an optional field, a misspelt name or a wrong type panics here).
fn lint<C: Default>(sections: &'static [Section<C>]) {
    let mut keys = HashSet::new();
    for s in sections {
        let ok = |n: &str| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        assert!(keys.insert(s.key), "{} twice", s.key);
        assert!(s.key.split('.').all(ok), "{}", s.key);
        assert!(s.doc.ends_with('.') && !s.doc.contains('\n'), "{}", s.key);
        for setting in SETTINGS {
            let (a, b) = (format!("{}.", s.key), format!("{}.", setting.key));
            assert!(
                s.key != setting.key && !setting.key.starts_with(&a) && !s.key.starts_with(&b),
                "{} overlaps {}",
                s.key,
                setting.key
            );
        }
        let mut names = HashSet::new();
        for f in s.fields {
            let at = format!("{}.{}", s.key, f.name);
            assert!(names.insert(f.name) && ok(f.name), "{at}");
            assert!(f.doc.ends_with('.') && !f.doc.contains('\n'), "{at}");
            assert!(f.shown().is_some(), "{at}: an example or a default");
            if let Need::Default(d) = f.need {
                f.default_value(d);
            }
            assert!(
                !matches!(f.need, Need::Required) || f.example.is_some(),
                "{at}"
            );
            assert!(
                !f.unique || matches!(f.ty, Type::Str(_)),
                "{at}: unique strings"
            );
        }
        if let Shape::Map { names, example } = s.shape {
            names.check(example).unwrap();
        }
        for minimal in [false, true] {
            let text = nested(s.key, &s.example(minimal));
            let (_, filled, errors) = parse_with("example.yaml", &text, sections);
            assert_eq!(errors, [], "{text}");
            assert_eq!(filled.len(), 1);
            assert_eq!(filled[0].records.len(), 1, "{text}");
            filled[0].apply(&mut C::default());
        }
    }
}

#[test]
fn declarations_keep_their_promises() {
    lint(SECTIONS);
    lint(TEST);
}

#[test]
fn records_are_read_into_typed_values_with_defaults() {
    let (cfg, got) = load(
        "http:
  workers: 2
auth:
  access:
    - repository: \"ci/*\"
      users: [ci-bot, alice]
      actions: [pull, push]
      expires: 90d
      audit: true
    - {repository: library/alpine, users: []}
storage:
  root: /srv/ringyard
  mirrors:
    backup:
      address: \"[::1]:5001\"
      headers:
        Authorization: Bearer token
        X-Region: eu-1
      events: [push, delete]
      timeout: 1m30s
      retries: 0
      max_body: 512MiB
      enabled: false
    nearby:
      address: mirror.local:5000
",
    )
    .unwrap();
    assert_eq!(cfg.workers, 2, "the scalars beside them still count");
    assert_eq!(cfg.root, std::path::PathBuf::from("/srv/ringyard"));
    let day = 86_400;
    assert_eq!(
        got.rules,
        [
            Rule {
                repository: "ci/*".into(),
                users: vec!["ci-bot".into(), "alice".into()],
                actions: vec!["pull".into(), "push".into()],
                expires: Some(Duration::from_secs(90 * day)),
                audit: true,
            },
            Rule {
                repository: "library/alpine".into(),
                users: vec![],
                actions: vec!["pull".into()],
                expires: None,
                audit: false,
            },
        ]
    );
    let headers = [("Authorization", "Bearer token"), ("X-Region", "eu-1")];
    assert_eq!(
        got.mirrors,
        [
            Mirror {
                name: "backup".into(),
                address: "[::1]:5001".into(),
                headers: headers.map(|(k, v)| (k.into(), v.into())).to_vec(),
                events: vec!["push".into(), "delete".into()],
                timeout: Duration::from_secs(90),
                retries: 0,
                max_body: Some(512 << 20),
                enabled: false,
            },
            Mirror {
                name: "nearby".into(),
                address: "mirror.local:5000".into(),
                headers: vec![],
                events: vec!["push".into()],
                timeout: Duration::from_secs(5),
                retries: 3,
                max_body: None,
                enabled: true,
            },
        ]
    );
}

#[test]
fn absent_and_empty_sections_have_no_records() {
    assert_eq!(schema(""), Schema::default());
    assert_eq!(
        schema("auth:\n  access:\nstorage:\n  mirrors: {}\n"),
        Schema::default()
    );
    assert_eq!(
        schema("auth:\n  access: []\n  # - repository: x\n"),
        Schema::default()
    );
}

#[test]
fn every_problem_at_once_with_line_and_path() {
    let text = "http:
  workers: 2
auth:
  access:
    - repository: \"ci/*\"
      users: [ci-bot]
      actions: [pull, pul]
    - repository: Ci/x
      user: [alice]
    - users: alice
      audit: \"yes\"
    - just a string
    - repository: \"ci/*\"
      users: [bob, ~]
      expires: 0s
      actions:
storage:
  mirrors:
    backup:
      address: nowhere
      headers: {X-Token: [a]}
      retries: 11
      max_body: 2GiB
      timeout:
      colour: red
    Bad Name:
      address: x:1
    empty: {}
";
    assert_eq!(
        errors(text),
        [
            r#"ringyard.yaml:7: auth.access[0].actions[1]: "pul" is not one of pull, push, delete"#,
            r#"ringyard.yaml:8: auth.access[1].repository: "Ci/x" is not a repository name or pattern (lowercase letters, digits, ._-/ and *)"#,
            "ringyard.yaml:9: auth.access[1].user: unknown field (did you mean auth.access[1].users?)",
            "ringyard.yaml:8: auth.access[1]: missing users (a list (each item a string))",
            "ringyard.yaml:10: auth.access[2].users: expected a list (each item a string), found a single value",
            r#"ringyard.yaml:11: auth.access[2].audit: expected true or false, found the string "yes" (write it without quotes)"#,
            "ringyard.yaml:10: auth.access[2]: missing repository (a repository name or pattern (lowercase letters, digits, ._-/ and *))",
            "ringyard.yaml:12: auth.access[3]: expected a record (repository, users, actions, expires, audit), found a single value",
            "ringyard.yaml:14: auth.access[4].users[1]: no value; write a string",
            r#"ringyard.yaml:15: auth.access[4].expires: "0s" is zero; this must be longer"#,
            "ringyard.yaml:16: auth.access[4].actions: no value; write a list (each item one of pull, push, delete) or remove the line for the default",
            r#"ringyard.yaml:13: auth.access[4].repository: "ci/*" again (first in auth.access[0] on line 5)"#,
            r#"ringyard.yaml:20: storage.mirrors.backup.address: "nowhere" is not HOST:PORT (use HOST:PORT, e.g. localhost:5000, 0.0.0.0:5000, [::]:5000)"#,
            "ringyard.yaml:21: storage.mirrors.backup.headers.X-Token: expected a string, found a list",
            r#"ringyard.yaml:22: storage.mirrors.backup.retries: "11" is more than the maximum of 10"#,
            r#"ringyard.yaml:23: storage.mirrors.backup.max_body: "2GiB" is more than the maximum of 1GiB"#,
            "ringyard.yaml:24: storage.mirrors.backup.timeout: no value; write a duration (30s, 5m, 1h) or remove the line for the default",
            "ringyard.yaml:25: storage.mirrors.backup.colour: unknown field (known here: address, headers, events, timeout, retries, max_body, enabled)",
            r#"ringyard.yaml:26: storage.mirrors["Bad Name"]: the name: "Bad Name" is not a name of lowercase letters, digits and -"#,
            "ringyard.yaml:28: storage.mirrors.empty: missing address (a HOST:PORT address)",
        ]
    );
}

#[test]
fn wrong_shapes_and_refused_yaml() {
    let one = |text: &str| {
        let e = errors(text);
        assert_eq!(e.len(), 1, "{e:?}");
        e[0].clone()
    };
    assert_eq!(
        one("auth:\n  access: {repository: x}\n"),
        "ringyard.yaml:2: auth.access: expected a list of records (repository, users, actions, expires, audit), found a mapping"
    );
    assert_eq!(
        one("storage:\n  mirrors:\n    - address: x:1\n"),
        "ringyard.yaml:2: storage.mirrors: expected a mapping of names to records (address, headers, events, timeout, retries, max_body, enabled), found a list"
    );
    assert_eq!(
        one("storage:\n  mirrors:\n    backup: x:1\n"),
        "ringyard.yaml:3: storage.mirrors.backup: expected a record (address, headers, events, timeout, retries, max_body, enabled), found a single value"
    );
    assert_eq!(
        one("auth:\n  acess: []\n"),
        "ringyard.yaml:2: auth.acess: unknown key (did you mean auth.access?)"
    );
    assert_eq!(
        one("autth:\n  access: []\n"),
        "ringyard.yaml:1: autth: unknown section (did you mean auth?)"
    );
    assert_eq!(
        one("auth: [x]\n"),
        "ringyard.yaml:1: auth: expected a mapping of settings (htpasswd, fail_delay, metrics, token, access), found a list"
    );
    assert_eq!(
        one("storage:\n  mirrors:\n    a: {address: \"x:1\"}\n    a: {address: \"x:2\"}\n"),
        r#"ringyard.yaml:4: "a" again (first on line 3)"#
    );
    assert_eq!(
        one("auth:\n  access:\n    - {repository: a, users: [], users: [b]}\n"),
        r#"ringyard.yaml:3: "users" again (first on line 3)"#
    );
    assert!(
        one("auth:\n  access:\n    - &r {repository: a, users: []}\n    - *r\n")
            .contains("anchors")
    );
    assert!(one("auth:\n  access:\n    - {repository: a, users: !!seq [b]}\n").contains("tags"));
    assert_eq!(
        one("auth:\n  access: []\n---\nauth:\n  access: []\n"),
        "ringyard.yaml:3: a second YAML document (---); the configuration is one document"
    );
}

/// The defaults file with the test schema: every section at its place, documented, with a
/// commented example that is itself valid; and the file as printed changes nothing.
#[test]
fn defaults_show_every_section_and_change_nothing() {
    let text = defaults_file_with(TEST);
    let (cfg, got) = load(&text).unwrap_or_else(|e| panic!("{e:#?}\n{text}"));
    assert_eq!(cfg, Config::default());
    assert_eq!(got, Schema::default());
    // the product's file is the same, less the sections
    assert!(text.starts_with(&defaults_file()[..defaults_file().find("\ndatabase:").unwrap()]));
    let mirrors = "    disk_size_gb: 50
  # Registries that get a copy of every push. A mapping from names (a name of lowercase letters,
  # digits and -) to records, set only in this file (no environment variable or flag); each has:
  #   address: a HOST:PORT address; required. Where the mirror listens.
  #   headers: a mapping of names (each value a string); default {}. Headers sent with every
  #     request.
  #   events: a list (each item one of push, delete); default [push]. What is copied.
  #   timeout: a duration (30s, 5m, 1h); default 5s. A request that takes longer fails.
  #   retries: a whole number; default 3. Retries of a failed request.
  #   max_body: a size (1024, 512KiB, 4MiB); optional. Larger blobs are not copied.
  #   enabled: true or false; default true. false keeps the mirror declared but idle.
  mirrors: {}
  # For example:
  # mirrors:
  #   backup:
  #     address: mirror.local:5000
  #     headers: {Authorization: \"Bearer token\"}
  #     events: [push]
  #     timeout: 5s
  #     retries: 3
  #     max_body: 512MiB
  #     enabled: true

database:
";
    assert!(text.contains(mirrors), "{text}");
    // a section goes after the settings of its group; every example is in the file,
    // commented (and valid: see lint)
    let auth = text.find("\n  # Who may do what where;").expect("auth");
    assert!(auth > text.find("\nauth:\n").unwrap());
    assert!(auth > text.find("\n  metrics: authenticated\n").unwrap());
    for s in TEST {
        let indent = "  ".repeat(s.key.matches('.').count());
        let commented: String = s
            .example(false)
            .lines()
            .map(|l| format!("{indent}# {l}\n"))
            .collect();
        assert!(text.contains(&commented), "{commented}");
    }
}

#[test]
fn variables_naming_a_section_are_refused() {
    let vars = [
        ("RINGYARD_AUTH_ACCESS", "[{repository: x}]"),
        ("RINGYARD_STORAGE_MIRRORS_BACKUP_ADDRESS", "x:1"),
        ("RINGYARD_STORAGE_ROOT", "/srv"),
    ];
    let (assignments, errors) =
        env::parse_with(vars.map(|(n, v)| (n.to_string(), v.to_string())), TEST);
    assert_eq!(
        assignments.len(),
        1,
        "the scalar settings keep their variables"
    );
    let texts: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        texts,
        [
            "RINGYARD_AUTH_ACCESS: auth.access is a list of records and can only be set in the configuration file",
            "RINGYARD_STORAGE_MIRRORS_BACKUP_ADDRESS: storage.mirrors is a mapping of names to records and can only be set in the configuration file",
        ]
    );
}

#[test]
fn reference_tables_come_from_the_declarations() {
    assert_eq!(markdown::<Config>(&[]), "");
    let md = markdown(TEST);
    assert!(md.contains("\n`auth.access`: a list of records, set only in the file. Who may do what where; the first rule whose repository matches decides.\n\n| field | type | required | meaning |\n|---|---|---|---|\n"), "{md}");
    assert!(md.contains("| `actions` | a list (each item one of pull, push, delete) | default `[pull]` | What they may do. |\n"), "{md}");
    assert!(
        md.contains("| `address` | a HOST:PORT address | yes | Where the mirror listens. |\n"),
        "{md}"
    );
    assert!(
        md.contains(
            "| `max_body` | a size (1024, 512KiB, 4MiB) | no | Larger blobs are not copied. |\n"
        ),
        "{md}"
    );
}
