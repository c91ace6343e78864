//! RPM's version order (`rpm.vercmp`, librpm's `rpmvercmp`): `[epoch:]version[-release]`,
//! the epoch as a number, then version and release each by `rpmvercmp`: runs of digits and
//! runs of letters compared in turn (other characters only separate them), digits as numbers
//! and newer than letters, `~` before everything (even the end), `^` after the end but before
//! anything else; the version with segments left over is the newer. Pure; tested against
//! `rpm` itself.

use std::cmp::Ordering;

/// A version split into epoch, version and release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evr<'a> {
    pub epoch: u64,
    pub version: &'a str,
    /// Empty when there is none.
    pub release: &'a str,
}

impl<'a> Evr<'a> {
    /// Splits `text`; None for an epoch that is not a number or an empty version.
    pub fn parse(text: &'a str) -> Option<Evr<'a>> {
        let (epoch, rest) = match text.split_once(':') {
            Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
                (e.parse().ok()?, rest)
            }
            Some(_) => return None,
            None => (0, text),
        };
        let (version, release) = rest.rsplit_once('-').unwrap_or((rest, ""));
        (!version.is_empty()).then_some(Evr {
            epoch,
            version,
            release,
        })
    }
}

impl Ord for Evr<'_> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.epoch
            .cmp(&other.epoch)
            .then_with(|| vercmp(self.version, other.version))
            .then_with(|| vercmp(self.release, other.release))
    }
}

impl PartialOrd for Evr<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// `a` against `b` in RPM's order; None when either does not parse.
pub fn compare(a: &str, b: &str) -> Option<Ordering> {
    Some(Evr::parse(a)?.cmp(&Evr::parse(b)?))
}

/// librpm's `rpmvercmp` on one part (a version or a release).
pub fn vercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let separator = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    while i < a.len() || j < b.len() {
        while i < a.len() && separator(a[i]) {
            i += 1;
        }
        while j < b.len() && separator(b[j]) {
            j += 1;
        }
        let (x, y) = (a.get(i).copied(), b.get(j).copied());
        if x == Some(b'~') || y == Some(b'~') {
            if x != Some(b'~') {
                return Ordering::Greater;
            }
            if y != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if x == Some(b'^') || y == Some(b'^') {
            if x.is_none() {
                return Ordering::Less;
            }
            if y.is_none() {
                return Ordering::Greater;
            }
            if x != Some(b'^') {
                return Ordering::Greater;
            }
            if y != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        let (Some(x), Some(_)) = (x, y) else { break };
        let numeric = x.is_ascii_digit();
        let (sa, ni) = segment(a, i, numeric);
        let (sb, nj) = segment(b, j, numeric);
        if sb.is_empty() {
            // Segments of different kinds: a number is newer than letters.
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        let order = if numeric {
            let (sa, sb) = (trim_zeros(sa), trim_zeros(sb));
            sa.len().cmp(&sb.len()).then_with(|| sa.cmp(sb))
        } else {
            sa.cmp(sb)
        };
        if order != Ordering::Equal {
            return order;
        }
        i = ni;
        j = nj;
    }
    match (i < a.len(), j < b.len()) {
        (false, false) => Ordering::Equal,
        (true, _) => Ordering::Greater,
        (false, true) => Ordering::Less,
    }
}

/// The run of digits (`numeric`) or of letters starting at `from`, and where it ends.
fn segment(s: &[u8], from: usize, numeric: bool) -> (&[u8], usize) {
    let len = s[from..]
        .iter()
        .take_while(|c| match numeric {
            true => c.is_ascii_digit(),
            false => c.is_ascii_alphabetic(),
        })
        .count();
    (&s[from..from + len], from + len)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let zeros = s.iter().take_while(|&&c| c == b'0').count();
    &s[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::version::reference;

    /// Versions chosen for the rules' edges: `~` and `^`, letters against numbers, separators
    /// that differ, leading zeros, segments left over, epochs and releases.
    const CORPUS: &[&str] = &[
        "1",
        "1.0",
        "1.0.0",
        "1.00",
        "1.01",
        "1.1",
        "1.10",
        "1.9",
        "1.0a",
        "1.0.a",
        "1a",
        "a",
        "1.0~rc1",
        "1.0~rc2",
        "1.0~",
        "1.0^",
        "1.0^git1",
        "1.0^git1~pre",
        "1.0~rc1^post",
        "1.0_1",
        "1.0+1",
        "1.0-1",
        "1.0-2",
        "1.0-1.el8",
        "1.0-1.el9",
        "1.0-10.el8",
        "2:1.0",
        "1:1.0-1",
        "0:1.0",
        "3.10.0-1160.el7",
        "3.10.0-1160.92.1.el7",
        "1.2.3",
        "1.2.3b",
        "1.2.3.b",
        "1.2.3-b",
        "fc4",
        "fc4.1",
        "8.0.0-1.fc38",
        "8.0.0",
        "2.0.0.beta1",
        "2.0.0",
        "000",
        "0",
    ];

    #[test]
    fn the_rules_edges() {
        use Ordering::*;
        let cases = [
            ("1.0~rc1", "1.0", Less),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.0a", "1.0.1", Less),
            ("1.0", "1.0.0", Less),
            ("1.01", "1.1", Equal),
            ("1.0_1", "1.0+1", Equal),
            ("2:1.0", "3.0", Greater),
            ("3.10.0-1160.el7", "3.10.0-1160.92.1.el7", Less),
        ];
        reference::assert_both_ways(compare, &cases);
        assert_eq!(compare("x:1", "1"), None);
        let v = Evr::parse("2:1.2-3.el9").unwrap();
        assert_eq!((v.epoch, v.version, v.release), (2, "1.2", "3.el9"));
    }

    /// Every pair of the corpus against `rpm` itself (its Lua `rpm.vercmp`, which compares
    /// whole EVR strings as `rpm -q` does; installed by `.ci/run`; skipped with a note
    /// elsewhere).
    #[test]
    fn agrees_with_rpm_on_every_pair() {
        // One rpm run for every pair: a Lua script printing the answers, space-separated
        // (rpm's Lua `print` adds no line end).
        let script: String = reference::pairs(CORPUS)
            .map(|(a, b)| format!("print(rpm.vercmp(\"{a}\", \"{b}\") .. \" \")\n"))
            .collect();
        let out = match std::process::Command::new("rpm")
            .args(["--eval", &format!("%{{lua:\n{script}}}")])
            .output()
        {
            Ok(o) if o.status.success() => o,
            _ => {
                reference::skipped("rpm is not installed here");
                return;
            }
        };
        let theirs = reference::answers(&out.stdout);
        reference::assert_agree("rpm", CORPUS, theirs, compare);
    }
}
