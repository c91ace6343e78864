//! Test plumbing shared by the version orders' tests: every ordered pair of a corpus, the
//! reference tool's answers read back, and the comparison of ours with theirs. Each order's
//! own tests keep their corpus and how they run their reference tool.

use std::cmp::Ordering;
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// A version order under test.
pub type Compare = fn(&str, &str) -> Option<Ordering>;

/// Every ordered pair of `versions`, `a` outer and `b` inner, as the reference scripts loop.
pub fn pairs<'a>(versions: &'a [&'a str]) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
    versions
        .iter()
        .flat_map(move |a| versions.iter().map(move |b| (*a, *b)))
}

/// Runs `command` with the versions as a JSON array on its standard input.
pub fn run_with_versions(command: &mut Command, versions: &[&str]) -> std::io::Result<Output> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        let json = serde_json::to_string(versions).map_err(std::io::Error::other)?;
        stdin.write_all(json.as_bytes())?;
    }
    child.wait_with_output()
}

/// A reference tool's white-space separated answers: the sign of a number (`-1`, `0`, `1`,
/// or any other number, as `rpm.vercmp` may answer), `x` where it refused a version.
pub fn answers(stdout: &[u8]) -> Vec<Option<Ordering>> {
    String::from_utf8_lossy(stdout)
        .split_whitespace()
        .map(|answer| match answer {
            "x" => None,
            n => Some(
                n.parse::<i64>()
                    .unwrap_or_else(|_| panic!("not an answer: {n:?}"))
                    .cmp(&0),
            ),
        })
        .collect()
}

/// Asserts that `ours` answers as `tool` did (`theirs`, one answer for each of
/// [`pairs`]`(versions)` in that order, exactly as many).
pub fn assert_agree(
    tool: &str,
    versions: &[&str],
    theirs: impl IntoIterator<Item = Option<Ordering>>,
    ours: Compare,
) {
    let mut theirs = theirs.into_iter();
    for (checked, (a, b)) in pairs(versions).enumerate() {
        let Some(theirs) = theirs.next() else {
            panic!(
                "{tool} gave {checked} answers for {} pairs",
                versions.len().pow(2)
            );
        };
        let ours = ours(a, b);
        assert_eq!(
            ours, theirs,
            "{a:?} vs {b:?}: ours {ours:?}, {tool} {theirs:?}"
        );
    }
    assert!(
        theirs.next().is_none(),
        "{tool} gave more answers than pairs"
    );
}

/// Asserts each `(a, b, want)` both ways: `a` against `b` is `want`, `b` against `a` its
/// reverse.
pub fn assert_both_ways(compare: Compare, cases: &[(&str, &str, Ordering)]) {
    for &(a, b, want) in cases {
        assert_eq!(compare(a, b), Some(want), "{a} vs {b}");
        assert_eq!(compare(b, a), Some(want.reverse()), "{b} vs {a}");
    }
}

/// Says that a check against a reference tool was skipped, and why.
pub fn skipped(why: &str) {
    eprintln!("{why}: the order is checked by the rules' edges only");
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn pairs_are_a_outer_b_inner() {
        assert_eq!(
            pairs(&["1", "2"]).collect::<Vec<_>>(),
            [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
        );
    }

    #[test]
    fn answers_are_signs_or_refusals() {
        assert_eq!(
            answers(b"-1 0 1\nx\t-7 12 "),
            [
                Some(Less),
                Some(Equal),
                Some(Greater),
                None,
                Some(Less),
                Some(Greater)
            ]
        );
    }

    fn numeric(a: &str, b: &str) -> Option<Ordering> {
        Some(a.parse::<i32>().ok()?.cmp(&b.parse().ok()?))
    }

    #[test]
    fn agreement_is_checked_pair_by_pair_and_counted() {
        let theirs = [Some(Equal), Some(Less), Some(Greater), Some(Equal)];
        assert_agree("t", &["1", "2"], theirs, numeric);
        let refused = [None, None, None, Some(Equal)];
        assert_agree("t", &["x", "2"], refused, numeric);
        for wrong in [&theirs[..3], &[theirs, theirs].concat(), &[Some(Less); 4]] {
            let wrong = wrong.to_vec();
            let caught =
                std::panic::catch_unwind(|| assert_agree("t", &["1", "2"], wrong, numeric));
            assert!(caught.is_err());
        }
    }
}
