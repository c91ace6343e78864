//! Values as people write them, in the file, the environment and on the command line alike:
//! durations (`30s`, `5m`, `1h30m`, `500ms`; a plain number is seconds), sizes (`4MiB`, `10GB`,
//! `512KiB`; a plain number is bytes), booleans, whole numbers and `HOST:PORT` addresses.
//! Pure functions over strings; the error texts name the value and say what would be accepted,
//! and the caller puts the key (with its file line), the variable or the flag in front.

use std::time::Duration;

/// The longest duration accepted anywhere: deadlines are computed as now + duration, which must
/// not overflow, and nothing here needs more than a year.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

const DURATION_HINT: &str = "use 30s, 5m, 1h";
const SIZE_HINT: &str = "use 1024, 512KiB, 4MiB, 10GB";

/// `30s`, `5m`, `1h`, `500ms`, `1h30m`, `1.5h`, `2d`; a plain number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let bad = || format!("{s:?} is not a duration ({DURATION_HINT})");
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let secs: u64 = text.parse().map_err(|_| too_long(s))?;
        return checked_duration(Duration::from_secs(secs), s);
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| {
                format!("{s:?} is not a duration: a unit is missing after the last number ({DURATION_HINT})")
            })?;
        let unit_len = rest[num_len..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len() - num_len);
        let (number, unit) = (&rest[..num_len], &rest[num_len..num_len + unit_len]);
        let unit_nanos: u128 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "d" => 86_400 * 1_000_000_000,
            _ => return Err(bad()),
        };
        let nanos = scaled(number, unit_nanos).ok_or_else(bad)?;
        let part = Duration::from_nanos(u64::try_from(nanos).map_err(|_| too_long(s))?);
        total = total.checked_add(part).ok_or_else(|| too_long(s))?;
        rest = &rest[num_len + unit_len..];
    }
    checked_duration(total, s)
}

/// `number` (digits with an optional decimal fraction) times `unit`, exact to the nanosecond.
fn scaled(number: &str, unit: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut value = int.checked_mul(unit)?;
    let mut scale = unit;
    for d in frac.bytes() {
        scale /= 10;
        value = value.checked_add(u128::from(d - b'0') * scale)?;
    }
    Some(value)
}

fn too_long(s: &str) -> String {
    format!(
        "{s:?} is too long: at most {}",
        format_duration(MAX_DURATION)
    )
}

fn checked_duration(d: Duration, s: &str) -> Result<Duration, String> {
    if d > MAX_DURATION {
        Err(too_long(s))
    } else {
        Ok(d)
    }
}

/// The shortest way to write `d` that [`parse_duration`] reads back exactly: `1h30m`, `500ms`,
/// `0s`. (Parts below a millisecond are dropped; nothing here is that fine.)
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

const SIZE_UNITS: [(&str, u64); 9] = [
    ("b", 1),
    ("kb", 1000),
    ("mb", 1000 * 1000),
    ("gb", 1000 * 1000 * 1000),
    ("tb", 1000 * 1000 * 1000 * 1000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

/// `4MiB`, `512KiB`, `10GB`, `4 MiB`, `1024`: a plain number is bytes; KB, MB, GB, TB are
/// powers of 1000, KiB, MiB, GiB, TiB powers of 1024 (units in any case).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = (&text[..digits], text[digits..].trim_start());
    if number.is_empty() {
        return Err(format!("{s:?} is not a size ({SIZE_HINT})"));
    }
    let factor = if unit.is_empty() {
        1
    } else {
        let lower = unit.to_ascii_lowercase();
        match SIZE_UNITS.iter().find(|(u, _)| *u == lower) {
            Some((_, f)) => *f,
            None if matches!(lower.as_str(), "k" | "m" | "g" | "t") => {
                return Err(format!(
                    "{s:?} is ambiguous: write {number}{}iB (binary) or {number}{}B (decimal)",
                    unit.to_ascii_uppercase(),
                    unit.to_ascii_uppercase()
                ))
            }
            None => return Err(format!("{s:?} is not a size ({SIZE_HINT})")),
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The shortest exact way to write `n` bytes: `4MiB`, `64KiB`, `10GB`, `1000`.
pub fn format_size(n: u64) -> String {
    if n == 0 {
        return "0".into();
    }
    let units = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("TB", 1_000_000_000_000),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1000),
    ];
    units
        .iter()
        .filter(|(_, f)| n.is_multiple_of(*f))
        .min_by_key(|(_, f)| n / f)
        .map_or_else(|| n.to_string(), |(unit, f)| format!("{}{unit}", n / f))
}

/// `true` or `false` (also `yes`/`no`, `on`/`off`, `1`/`0`, in any case, as YAML 1.1 and
/// environment variables commonly write them).
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{s:?} is not true or false")),
    }
}

/// A whole number, 0 or more.
pub fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a whole number"));
    }
    t.parse().map_err(|_| format!("{s:?} is too large"))
}

/// `HOST:PORT` with a host name, an IPv4 address or a bracketed IPv6 address, and a port in
/// 0..=65535 (0 picks a free port). Only the form is checked; resolving the name is the
/// server's job when it starts.
pub fn check_listen(s: &str) -> Result<(), String> {
    let hint = "use HOST:PORT, e.g. localhost:5000, 0.0.0.0:5000, [::]:5000";
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{s:?} is not HOST:PORT ({hint})"));
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.parse::<u16>().is_err()
    {
        return Err(format!(
            "{s:?}: the port {port:?} is not a number from 0 to 65535"
        ));
    }
    if host.is_empty() {
        return Err(format!(
            "{s:?} has no host (0.0.0.0:{port} listens on every IPv4 address, [::]:{port} on every IPv6 one)"
        ));
    }
    if let Some(inner) = host.strip_prefix('[') {
        let ok = inner
            .strip_suffix(']')
            .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok());
        return if ok {
            Ok(())
        } else {
            Err(format!("{s:?}: {host:?} is not an IPv6 address ({hint})"))
        };
    }
    if host.contains(':') {
        return Err(format!(
            "{s:?}: write an IPv6 address in brackets, like [::1]:{port}"
        ));
    }
    let name_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
    });
    if !name_ok || host.len() > 253 {
        return Err(format!(
            "{s:?}: {host:?} is not a host name or IP address ({hint})"
        ));
    }
    Ok(())
}

/// Edit distance (insertions, deletions, substitutions; ASCII case ignored).
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<u8> = a.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let b: Vec<u8> = b.bytes().map(|c| c.to_ascii_lowercase()).collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(word, c), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(secs(30)));
        assert_eq!(parse_duration("5m"), Ok(secs(300)));
        assert_eq!(parse_duration("1h"), Ok(secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(secs(5400)));
        assert_eq!(
            parse_duration("1h30m15s250ms"),
            Ok(Duration::from_millis(5_415_250))
        );
        assert_eq!(parse_duration("1.5h"), Ok(secs(5400)));
        assert_eq!(parse_duration("0.25s"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2d"), Ok(secs(2 * 86_400)));
        assert_eq!(
            parse_duration("60"),
            Ok(secs(60)),
            "a plain number is seconds"
        );
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("365d"), Ok(MAX_DURATION));
    }

    #[test]
    fn bad_durations_say_why() {
        for bad in [
            "5x", "", "s", "1.2.3s", "-5s", "5 m", "1h30", "ms", "1hour", "5S", ".s",
        ] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        assert_eq!(
            parse_duration("5x").unwrap_err(),
            r#""5x" is not a duration (use 30s, 5m, 1h)"#
        );
        assert!(parse_duration("1h30")
            .unwrap_err()
            .contains("unit is missing"));
        assert!(parse_duration("366d").unwrap_err().contains("at most 365d"));
        assert!(parse_duration("99999999999999999999")
            .unwrap_err()
            .contains("too long"));
        assert!(parse_duration("99999999999999999999h")
            .unwrap_err()
            .contains("too long"));
    }

    #[test]
    fn durations_format_and_read_back() {
        for (d, text) in [
            (secs(60), "1m"),
            (secs(3600), "1h"),
            (secs(5400), "1h30m"),
            (secs(30), "30s"),
            (secs(90_061), "1d1h1m1s"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::ZERO, "0s"),
        ] {
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text), Ok(d));
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("1KB"), Ok(1000));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("64kib"), Ok(64 << 10), "units in any case");
        assert_eq!(parse_size("4 MiB"), Ok(4 << 20));
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn bad_sizes_say_why() {
        assert_eq!(
            parse_size("lots").unwrap_err(),
            r#""lots" is not a size (use 1024, 512KiB, 4MiB, 10GB)"#
        );
        for bad in ["", "MiB", "4XB", "-1", "1.5MiB", "4 Mi B"] {
            assert!(parse_size(bad).unwrap_err().contains("not a size"), "{bad}");
        }
        assert!(parse_size("4M")
            .unwrap_err()
            .contains("4MiB (binary) or 4MB (decimal)"));
        assert!(parse_size("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn sizes_format_and_read_back() {
        for (n, text) in [
            (4u64 << 20, "4MiB"),
            (64 << 10, "64KiB"),
            (10_000_000_000, "10GB"),
            (1000, "1KB"),
            (1023, "1023"),
            (1 << 30, "1GiB"),
        ] {
            assert_eq!(format_size(n), text);
            assert_eq!(parse_size(text), Ok(n));
        }
    }

    #[test]
    fn booleans_and_counts() {
        for t in ["true", "True", "TRUE", "yes", "on", "1"] {
            assert_eq!(parse_bool(t), Ok(true), "{t}");
        }
        for f in ["false", "no", "Off", "0"] {
            assert_eq!(parse_bool(f), Ok(false), "{f}");
        }
        assert_eq!(
            parse_bool("maybe").unwrap_err(),
            r#""maybe" is not true or false"#
        );
        assert_eq!(parse_count("42"), Ok(42));
        assert_eq!(
            parse_count("abc").unwrap_err(),
            r#""abc" is not a whole number"#
        );
        assert!(parse_count("-3").is_err());
        assert!(parse_count("1.5").is_err());
        assert!(parse_count("99999999999999999999999")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn listen_addresses() {
        for ok in [
            "localhost:5000",
            "127.0.0.1:0",
            "0.0.0.0:65535",
            "[::]:5000",
            "[::1]:80",
            "registry.example.com:443",
            "my-host:1",
        ] {
            assert_eq!(check_listen(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("not-an-address", "is not HOST:PORT"),
            ("5000", "is not HOST:PORT"),
            ("127.0.0.1:99999", "0 to 65535"),
            ("localhost:", "0 to 65535"),
            ("localhost:http", "0 to 65535"),
            (":5000", "has no host"),
            ("::1:5000", "in brackets"),
            ("[::g]:5000", "not an IPv6 address"),
            ("[::1:5000", "not an IPv6 address"),
            ("bad_host:5000", "not a host name"),
            ("a..b:5000", "not a host name"),
            ("", "is not HOST:PORT"),
        ] {
            let e = check_listen(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn typo_suggestions() {
        assert_eq!(distance("listen", "lissten"), 1);
        assert_eq!(distance("HTTP", "http"), 0);
        let keys = ["listen", "workers", "max_connections"];
        assert_eq!(closest("lisen", keys), Some("listen"));
        assert_eq!(closest("max_conections", keys), Some("max_connections"));
        assert_eq!(closest("banana", keys), None);
    }
}

/// A daily span of UTC time, `HH:MM-HH:MM`, that may wrap past midnight (`22:00-04:00`):
/// when scheduled garbage collection may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Minutes after midnight UTC; `from == to` is the whole day.
    pub from: u16,
    pub to: u16,
}

impl Window {
    pub fn parse(text: &str) -> Result<Window, String> {
        let bad = || format!("{text:?} is not a time window (HH:MM-HH:MM, UTC, as 01:00-05:00)");
        let minutes = |hm: &str| -> Option<u16> {
            let (h, m) = hm.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && hm.trim().len() == 5).then_some(h * 60 + m)
        };
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        Ok(Window {
            from: minutes(a).ok_or_else(bad)?,
            to: minutes(b).ok_or_else(bad)?,
        })
    }

    /// Whether `unix_ms` falls inside (the end excluded).
    pub fn contains(&self, unix_ms: i64) -> bool {
        let minute = (unix_ms.rem_euclid(86_400_000) / 60_000) as u16;
        match self.from.cmp(&self.to) {
            std::cmp::Ordering::Equal => true,
            std::cmp::Ordering::Less => (self.from..self.to).contains(&minute),
            std::cmp::Ordering::Greater => minute >= self.from || minute < self.to,
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::Window;

    #[test]
    fn windows_parse_and_wrap_past_midnight() {
        let w = Window::parse("01:00-05:30").unwrap();
        assert_eq!((w.from, w.to), (60, 330));
        let at = |h: i64, m: i64| 3 * 86_400_000 + (h * 60 + m) * 60_000;
        assert!(w.contains(at(1, 0)) && w.contains(at(5, 29)));
        assert!(!w.contains(at(5, 30)) && !w.contains(at(0, 59)));
        let night = Window::parse("22:00-04:00").unwrap();
        assert!(night.contains(at(23, 0)) && night.contains(at(3, 59)));
        assert!(!night.contains(at(12, 0)));
        assert!(Window::parse("00:00-00:00").unwrap().contains(at(17, 3)));
        for bad in ["", "1:00-5:00", "25:00-01:00", "01:00", "01:60-02:00", "x"] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }
}
