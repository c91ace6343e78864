//! CVSS base scores computed from vector strings, because OSV records carry the vector and
//! not the number.
//!
//! - v3.0 and v3.1 (FIRST's specification, section 7): the two share the base formula;
//!   Roundup is 3.1's integer form (Appendix A), which is what 3.0's "smallest number, to
//!   one decimal place, that is equal to or higher than its input" means without floating
//!   point noise.
//! - v2 (the v2 guide, section 3.2.1), for records that have nothing newer.
//! - v4 is not scored: its score comes from a table of macro-vectors, not a formula; a
//!   record with only a v4 vector is rated by its database's severity word instead.
//!
//! Temporal and environmental metrics in a vector are checked for form and otherwise
//! ignored: a scan reports the base score, as the databases do.

/// The base score of a `CVSS:3.0/...` or `CVSS:3.1/...` vector; None for anything that is
/// not a valid v3 vector (unknown or repeated metric, missing base metric, bad value).
pub fn v3_base_score(vector: &str) -> Option<f32> {
    let mut parts = vector.trim().split('/');
    match parts.next()? {
        "CVSS:3.0" | "CVSS:3.1" => {}
        _ => return None,
    }
    // AV, AC, PR, UI, S, C, I, A.
    let mut base: [Option<u8>; 8] = [None; 8];
    let mut seen_other: Vec<&str> = Vec::new();
    for part in parts {
        let (name, value) = part.split_once(':')?;
        let value = single_letter(value)?;
        let slot = match name {
            "AV" => Some((0, "NALP")),
            "AC" => Some((1, "LH")),
            "PR" => Some((2, "NLH")),
            "UI" => Some((3, "NR")),
            "S" => Some((4, "UC")),
            "C" => Some((5, "HLN")),
            "I" => Some((6, "HLN")),
            "A" => Some((7, "HLN")),
            _ => None,
        };
        match slot {
            Some((i, allowed)) => {
                if !allowed.as_bytes().contains(&value) || base.get(i)?.is_some() {
                    return None;
                }
                *base.get_mut(i)? = Some(value);
            }
            None => {
                let allowed = v3_other_metric(name)?;
                if !allowed.as_bytes().contains(&value) || seen_other.contains(&name) {
                    return None;
                }
                seen_other.push(name);
            }
        }
    }
    let [Some(av), Some(ac), Some(pr), Some(ui), Some(s), Some(c), Some(i), Some(a)] = base else {
        return None;
    };
    let changed = s == b'C';
    let av = match av {
        b'N' => 0.85,
        b'A' => 0.62,
        b'L' => 0.55,
        _ => 0.2,
    };
    let ac = if ac == b'L' { 0.77 } else { 0.44 };
    let pr = match (pr, changed) {
        (b'N', _) => 0.85,
        (b'L', false) => 0.62,
        (b'L', true) => 0.68,
        (_, false) => 0.27,
        (_, true) => 0.5,
    };
    let ui = if ui == b'N' { 0.85 } else { 0.62 };
    let cia = |v: u8| match v {
        b'H' => 0.56,
        b'L' => 0.22,
        _ => 0.0,
    };
    let iss = 1.0 - (1.0 - cia(c)) * (1.0 - cia(i)) * (1.0 - cia(a));
    let impact = if changed {
        7.52 * (iss - 0.029) - 3.25 * f64::powi(iss - 0.02, 15)
    } else {
        6.42 * iss
    };
    let exploitability = 8.22 * av * ac * pr * ui;
    let score = if impact <= 0.0 {
        0.0
    } else if changed {
        roundup(f64::min(1.08 * (impact + exploitability), 10.0))
    } else {
        roundup(f64::min(impact + exploitability, 10.0))
    };
    Some(score as f32)
}

/// The values the v3 temporal and environmental metrics take.
fn v3_other_metric(name: &str) -> Option<&'static str> {
    Some(match name {
        "E" => "XUPFH",
        "RL" => "XOTWU",
        "RC" => "XURC",
        "CR" | "IR" | "AR" => "XLMH",
        "MAV" => "XNALP",
        "MAC" => "XLH",
        "MPR" => "XNLH",
        "MUI" => "XNR",
        "MS" => "XUC",
        "MC" | "MI" | "MA" => "XNLH",
        _ => return None,
    })
}

fn single_letter(value: &str) -> Option<u8> {
    match value.as_bytes() {
        [b] => Some(*b),
        _ => None,
    }
}

/// CVSS v3.1 Appendix A: the smallest number with one decimal that is at least `x`,
/// computed on an integer so that 4.000000000000001 rounds to 4.0, not 4.1.
fn roundup(x: f64) -> f64 {
    let int_input = (x * 100_000.0).round() as i64;
    if int_input % 10_000 == 0 {
        int_input as f64 / 100_000.0
    } else {
        (int_input / 10_000 + 1) as f64 / 10.0
    }
}

/// The base score of a CVSS v2 vector (`AV:N/AC:L/Au:N/C:P/I:P/A:P`, optionally wrapped as
/// `(AV:...)` or prefixed `CVSS:2.0/`); None when it is not one.
pub fn v2_base_score(vector: &str) -> Option<f32> {
    let v = vector.trim();
    let v = v
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or(v);
    let v = v.strip_prefix("CVSS:2.0/").unwrap_or(v);
    // AV, AC, Au, C, I, A.
    let mut base: [Option<u8>; 6] = [None; 6];
    let mut seen_other: Vec<&str> = Vec::new();
    for part in v.split('/') {
        let (name, value) = part.split_once(':')?;
        let slot = match name {
            "AV" => Some((0, "LAN")),
            "AC" => Some((1, "HML")),
            "Au" => Some((2, "MSN")),
            "C" => Some((3, "NPC")),
            "I" => Some((4, "NPC")),
            "A" => Some((5, "NPC")),
            _ => None,
        };
        match slot {
            Some((i, allowed)) => {
                let value = single_letter(value)?;
                if !allowed.as_bytes().contains(&value) || base.get(i)?.is_some() {
                    return None;
                }
                *base.get_mut(i)? = Some(value);
            }
            None => {
                let allowed: &[&str] = match name {
                    "E" => &["U", "POC", "F", "H", "ND"],
                    "RL" => &["OF", "TF", "W", "U", "ND"],
                    "RC" => &["UC", "UR", "C", "ND"],
                    "CDP" => &["N", "L", "LM", "MH", "H", "ND"],
                    "TD" => &["N", "L", "M", "H", "ND"],
                    "CR" | "IR" | "AR" => &["L", "M", "H", "ND"],
                    _ => return None,
                };
                if !allowed.contains(&value) || seen_other.contains(&name) {
                    return None;
                }
                seen_other.push(name);
            }
        }
    }
    let [Some(av), Some(ac), Some(au), Some(c), Some(i), Some(a)] = base else {
        return None;
    };
    let av = match av {
        b'L' => 0.395,
        b'A' => 0.646,
        _ => 1.0,
    };
    let ac = match ac {
        b'H' => 0.35,
        b'M' => 0.61,
        _ => 0.71,
    };
    let au = match au {
        b'M' => 0.45,
        b'S' => 0.56,
        _ => 0.704,
    };
    let cia = |v: u8| match v {
        b'P' => 0.275,
        b'C' => 0.660,
        _ => 0.0,
    };
    let impact: f64 = 10.41 * (1.0 - (1.0 - cia(c)) * (1.0 - cia(i)) * (1.0 - cia(a)));
    let exploitability = 20.0 * av * ac * au;
    let f = if impact == 0.0 { 0.0 } else { 1.176 };
    let score: f64 = ((0.6 * impact) + (0.4 * exploitability) - 1.5) * f;
    // Round half up to one decimal; the epsilon keeps a product that lands a hair under a
    // half (x.x4999999) from rounding down.
    Some((((score * 10.0) + 1e-9).round() / 10.0).max(0.0) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors with the base scores NVD / FIRST publish for them.
    const V3: &[(&str, f32)] = &[
        // CVE-2022-22965 (Spring4Shell).
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        // CVE-2023-44487 (HTTP/2 rapid reset).
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H", 7.5),
        // CVE-2014-0160 (Heartbleed), NVD's v3.1 vector.
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N", 7.5),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N", 5.3),
        // The typical reflected XSS.
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N", 6.1),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:H/I:H/A:H", 8.8),
        // CVE-2021-44228 (Log4Shell).
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N", 0.0),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:N/I:N/A:N", 0.0),
        // CVE-2021-3156 (sudo, Baron Samedit).
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.8),
        // CVE-2020-28498 (elliptic), the OSV schema's example record.
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:C/C:H/I:N/A:N", 6.8),
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H", 8.8),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H", 8.1),
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H", 5.5),
        // Stored XSS: scope changed, PR:L weighs 0.68.
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N", 6.4),
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:R/S:C/C:L/I:L/A:N", 5.4),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N", 5.9),
        ("CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:H/I:H/A:H", 7.0),
        ("CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H", 7.2),
        // CVE-2022-24093 (Adobe Commerce): scope changed, PR:H weighs 0.5.
        ("CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:C/C:H/I:H/A:H", 9.1),
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 9.9),
        // CVE-2022-41953 (Git GUI), also CVE-2019-5736's score (runc).
        ("CVSS:3.1/AV:L/AC:L/PR:N/UI:R/S:C/C:H/I:H/A:H", 8.6),
        ("CVSS:3.1/AV:P/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 6.8),
        ("CVSS:3.1/AV:A/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 8.8),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:N/I:H/A:N", 6.5),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:L/A:L", 7.3),
        ("CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N", 3.1),
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:L/I:N/A:N", 3.3),
        ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N", 1.6),
        // v3.0 vectors score the same way.
        ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        // Temporal and environmental metrics do not change the base score; order is free.
        (
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N/E:P/RL:W/RC:C",
            6.1,
        ),
        (
            "CVSS:3.1/S:U/AV:N/AC:L/PR:N/UI:N/C:H/I:H/A:H/MAV:L/CR:H",
            9.8,
        ),
    ];

    #[test]
    fn v3_scores_match_published_ones() {
        for (vector, want) in V3 {
            assert_eq!(v3_base_score(vector), Some(*want), "{vector}");
        }
    }

    #[test]
    fn v3_refuses_invalid_vectors() {
        for bad in [
            "",
            "AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:2.0/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/A:H",
            "CVSS:3.1/AV:X/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:NN/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/ZZ:X",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:Z",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:P/E:P",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:é",
        ] {
            assert_eq!(v3_base_score(bad), None, "{bad}");
        }
    }

    #[test]
    fn roundup_is_the_integer_form() {
        assert_eq!(roundup(4.000000000000001), 4.0);
        assert_eq!(roundup(4.02), 4.1);
        assert_eq!(roundup(4.0), 4.0);
        assert_eq!(roundup(0.01), 0.1);
    }

    #[test]
    fn v2_scores_match_published_ones() {
        for (vector, want) in [
            // CVE-2014-0160's v2 vector.
            ("AV:N/AC:L/Au:N/C:P/I:N/A:N", 5.0),
            ("AV:N/AC:L/Au:N/C:P/I:P/A:P", 7.5),
            ("AV:N/AC:M/Au:N/C:N/I:P/A:N", 4.3),
            // The OSV schema's CVSS_V2 example.
            ("AV:L/AC:M/Au:N/C:N/I:P/A:C", 5.4),
            ("AV:N/AC:L/Au:N/C:C/I:C/A:C", 10.0),
            ("(AV:N/AC:L/Au:N/C:C/I:C/A:C)", 10.0),
            ("CVSS:2.0/AV:L/AC:L/Au:N/C:C/I:C/A:C", 7.2),
            ("AV:N/AC:L/Au:N/C:N/I:N/A:N", 0.0),
            ("AV:N/AC:L/Au:N/C:P/I:P/A:P/E:POC/RL:OF/RC:C", 7.5),
        ] {
            assert_eq!(v2_base_score(vector), Some(want), "{vector}");
        }
        for bad in [
            "",
            "AV:N/AC:L/Au:N/C:P/I:P",
            "AV:N/AC:L/Au:N/C:P/I:P/A:P/A:P",
            "AV:N/AC:L/Au:X/C:P/I:P/A:P",
            "AV:N/AC:L/Au:N/C:P/I:P/A:P/E:Q",
            "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        ] {
            assert_eq!(v2_base_score(bad), None, "{bad}");
        }
    }

    /// Every v3 base vector and every v2 base vector against Red Hat's `cvss` Python
    /// library (`pip install cvss`), the implementation NVD's figures are usually checked
    /// with; skipped with a note where it is not installed.
    #[test]
    fn agrees_with_the_cvss_python_library_on_every_base_vector() {
        let mut v3 = Vec::new();
        for av in "NALP".chars() {
            for ac in "LH".chars() {
                for pr in "NLH".chars() {
                    for ui in "NR".chars() {
                        for s in "UC".chars() {
                            for c in "HLN".chars() {
                                for i in "HLN".chars() {
                                    for a in "HLN".chars() {
                                        v3.push(format!(
                                            "CVSS:3.1/AV:{av}/AC:{ac}/PR:{pr}/UI:{ui}/S:{s}/C:{c}/I:{i}/A:{a}"
                                        ));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let mut v2 = Vec::new();
        for av in "LAN".chars() {
            for ac in "HML".chars() {
                for au in "MSN".chars() {
                    for c in "NPC".chars() {
                        for i in "NPC".chars() {
                            for a in "NPC".chars() {
                                v2.push(format!("AV:{av}/AC:{ac}/Au:{au}/C:{c}/I:{i}/A:{a}"));
                            }
                        }
                    }
                }
            }
        }
        let script = "import sys\nfrom cvss import CVSS2, CVSS3\nfor line in sys.stdin:\n    \
                      v = line.strip()\n    c = CVSS3(v) if v.startswith('CVSS:3') else CVSS2(v)\n    \
                      print(c.base_score)\n";
        let input: String = v3.iter().chain(&v2).map(|v| format!("{v}\n")).collect();
        let Some(out) = run_python(script, &input) else {
            eprintln!(
                "python3 with the `cvss` library is not installed here (pip install cvss): \
                 the scores are checked against the published table only"
            );
            return;
        };
        let theirs: Vec<&str> = out.lines().collect();
        assert_eq!(theirs.len(), v3.len() + v2.len());
        for (vector, theirs) in v3.iter().chain(&v2).zip(theirs) {
            let ours = if vector.starts_with("CVSS:3") {
                v3_base_score(vector)
            } else {
                v2_base_score(vector)
            };
            let theirs: f32 = theirs.parse().unwrap();
            assert_eq!(ours, Some(theirs), "{vector}");
        }
    }

    fn run_python(script: &str, input: &str) -> Option<String> {
        use std::io::Write;
        let python = crate::testing::python_with("cvss")?;
        let mut child = std::process::Command::new(python)
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take()?;
        let input = input.to_owned();
        let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
        let out = child.wait_with_output().ok()?;
        let _ = writer.join();
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()
    }
}
