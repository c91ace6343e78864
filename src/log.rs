//! Logging to stderr: one line per event, as text (`2026-04-01T10:00:00.123Z info message`) or
//! as one JSON object per line (`{"ts":...,"level":"info","msg":"message"}`), chosen once at
//! startup by [`configure`]. The level filters the ordinary lines; the access log (one
//! line per [`Exchange`]) is switched by configuration alone, so `--quiet` does not
//! silence it.
//!
//! Event loops never write to stderr themselves, since a slow reader of the pipe would stall
//! them: a worker thread opts in with [`buffer_this_thread`], and from then on its lines are
//! appended to a thread-local buffer (no lock, no syscall per line) that is handed whole to the
//! logger thread over a bounded channel when it fills up, and every ~100 ms by the worker's
//! timer ([`flush_thread`]). When that channel is full the buffer is dropped, never waited for,
//! and its lines are counted ([`dropped_lines`], a metric). Other threads (startup, shutdown,
//! the metadata engine) write their rare lines at once, under the lock the logger thread also
//! writes under, so lines never interleave.
//!
//! Lines come out in timestamp order across threads: the logger thread holds each line for
//! [`HOLD`], longer than a worker keeps its buffer, and merges the buffers of all workers by
//! time; a line written at once first lets out the held lines older than it.

use crate::config::{LogFormat, LogLevel};
use crate::observe::Exchange;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::cell::{Cell, RefCell};
use std::fmt::Arguments;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

static LEVEL: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
static JSON: AtomicBool = AtomicBool::new(false);
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// A worker's buffer is handed to the logger thread once it holds this much.
const HAND_OFF_AT: usize = 48 * 1024;
const BUFFER_CAPACITY: usize = 64 * 1024;
/// Buffers waiting for the logger thread; beyond this, lines are dropped (about 3 MiB).
const QUEUED_BUFFERS: usize = 48;

/// Sets the level and format of everything logged from here on; called once at startup.
pub fn configure(level: LogLevel, format: LogFormat) {
    LEVEL.store(level as u8, Ordering::Relaxed);
    JSON.store(format == LogFormat::Json, Ordering::Relaxed);
}

/// Whether lines of `level` are written.
pub fn enabled(level: LogLevel) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed)
}

fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

pub fn error(args: Arguments<'_>) {
    log(LogLevel::Error, args);
}

pub fn warn(args: Arguments<'_>) {
    log(LogLevel::Warn, args);
}

pub fn info(args: Arguments<'_>) {
    log(LogLevel::Info, args);
}

/// Detail for diagnosing a problem (client connections that fail, readiness checks).
pub fn debug(args: Arguments<'_>) {
    log(LogLevel::Debug, args);
}

fn log(level: LogLevel, args: Arguments<'_>) {
    if enabled(level) {
        let at = SystemTime::now();
        deliver(at, |out| format_line(out, level, args, json(), at));
    }
}

/// Writes the access line of one request (callers check whether the access log is on).
pub fn access(x: &Exchange<'_>) {
    let at = SystemTime::now();
    deliver(at, |out| format_access(out, x, json(), at));
}

/// Lines dropped because the logger thread fell behind, since the start.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

// --- formatting -----------------------------------------------------------------------------

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
    }
}

fn format_line(
    out: &mut Vec<u8>,
    level: LogLevel,
    args: Arguments<'_>,
    json: bool,
    at: SystemTime,
) {
    if json {
        out.extend_from_slice(b"{\"ts\":\"");
        timestamp(out, at);
        out.extend_from_slice(b"\",\"level\":\"");
        out.extend_from_slice(level_name(level).as_bytes());
        out.extend_from_slice(b"\",\"msg\":");
        match args.as_str() {
            Some(s) => json_str(out, s),
            None => json_str(out, &args.to_string()),
        }
        out.extend_from_slice(b"}\n");
    } else {
        timestamp(out, at);
        out.push(b' ');
        out.extend_from_slice(level_name(level).as_bytes());
        out.push(b' ');
        let start = out.len();
        let _ = out.write_fmt(args);
        // One event, one line, whatever an error message carries.
        for b in &mut out[start..] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
        out.push(b'\n');
    }
}

/// A field of an access line, as each format writes it.
enum Field<'a> {
    /// Our own token (method, route class): no escaping needed.
    Word(&'a str),
    /// Text from the request; absent is `null` / `-`.
    Text(Option<&'a str>),
    Number(u64),
    Millis(Duration),
    Addr(Option<SocketAddr>),
}

fn format_access(out: &mut Vec<u8>, x: &Exchange<'_>, json: bool, at: SystemTime) {
    let fields = [
        ("method", Field::Word(x.method.as_str())),
        ("route", Field::Word(x.route.as_str())),
        ("repository", Field::Text(x.repository)),
        ("status", Field::Number(x.status.into())),
        ("received", Field::Number(x.received)),
        ("sent", Field::Number(x.sent)),
        ("duration_ms", Field::Millis(x.elapsed)),
        ("request_id", Field::Text(Some(x.request_id))),
        ("remote", Field::Addr(x.remote)),
        // last, so that readers of the lines before authentication existed read on
        ("user", Field::Text(x.user)),
    ];
    if json {
        out.extend_from_slice(b"{\"ts\":\"");
        timestamp(out, at);
        out.extend_from_slice(b"\",\"level\":\"info\",\"msg\":\"access\"");
    } else {
        timestamp(out, at);
        out.extend_from_slice(b" info access");
    }
    for (key, value) in fields {
        if json {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(b"\":");
        } else {
            out.push(b' ');
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
        }
        let quote = |out: &mut Vec<u8>| {
            if json {
                out.push(b'"');
            }
        };
        match value {
            Field::Number(n) => push_u64(out, n),
            Field::Millis(d) => push_millis(out, d),
            Field::Word(w) => {
                quote(out);
                out.extend_from_slice(w.as_bytes());
                quote(out);
            }
            Field::Text(Some(t)) if json => json_str(out, t),
            Field::Text(Some(t)) => out.extend_from_slice(t.as_bytes()),
            Field::Addr(Some(a)) => {
                quote(out);
                push_addr(out, a);
                quote(out);
            }
            Field::Text(None) | Field::Addr(None) => {
                out.extend_from_slice(if json { b"null" } else { b"-" })
            }
        }
    }
    out.extend_from_slice(if json { b"}\n" } else { b"\n" });
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail, and a str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends `n` in decimal, without the formatting machinery (access lines, response heads).
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `a.b.c.d:port` without the formatting machinery (the common case); IPv6 through it.
fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, octet.into());
            }
            out.push(b':');
            push_u64(out, a.port().into());
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

fn push_2(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]);
}

/// Milliseconds with microsecond precision: `12.345`.
fn push_millis(out: &mut Vec<u8>, d: Duration) {
    let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    push_u64(out, micros / 1000);
    out.push(b'.');
    let frac = micros % 1000;
    out.extend_from_slice(&[
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// `YYYY-MM-DDTHH:MM:SS.` of a second since the epoch (years 0 to 9999).
fn second_prefix(secs: u64) -> [u8; 20] {
    let mut out = Vec::with_capacity(20);
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let y = y.clamp(0, 9999) as u64;
    push_2(&mut out, y / 100);
    push_2(&mut out, y % 100);
    out.push(b'-');
    push_2(&mut out, m.into());
    out.push(b'-');
    push_2(&mut out, d.into());
    out.push(b'T');
    push_2(&mut out, rem / 3600);
    out.push(b':');
    push_2(&mut out, rem / 60 % 60);
    out.push(b':');
    push_2(&mut out, rem % 60);
    out.push(b'.');
    out.try_into().unwrap_or([b'0'; 20])
}

thread_local! {
    /// The last second formatted on this thread: lines within one second reuse it.
    static SECOND: Cell<(u64, [u8; 20])> = const { Cell::new((u64::MAX, [0; 20])) };
}

/// RFC 3339 in UTC with milliseconds: `2026-04-01T10:00:00.123Z`.
fn timestamp(out: &mut Vec<u8>, at: SystemTime) {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let prefix = SECOND.with(|cached| {
        let (s, prefix) = cached.get();
        if s == secs {
            prefix
        } else {
            let prefix = second_prefix(secs);
            cached.set((secs, prefix));
            prefix
        }
    });
    out.extend_from_slice(&prefix);
    let ms = u64::from(since.subsec_millis());
    out.extend_from_slice(&[
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
    ]);
    out.push(b'Z');
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) in the proleptic Gregorian calendar to days since 1970-01-01: the
/// inverse of [`civil_from_days`] (H. Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u8, d: u8) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds of an ISO 8601 UTC time as S3 writes them (`2026-12-07T19:02:09.000Z`,
/// fraction optional); None for anything else.
pub(crate) fn parse_utc_millis(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, mo, da) = (d.next()?, d.next()?, d.next()?);
    let (y, mo, da): (i64, u8, u8) = (y.parse().ok()?, mo.parse().ok()?, da.parse().ok()?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':');
    let (h, mi, se): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if h > 23 || mi > 59 || se > 60 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0'));
    Some(((days_from_civil(y, mo, da) * 24 + h) * 60 + mi) * 60_000 + se * 1000 + ms)
}

// --- delivery -------------------------------------------------------------------------------

/// How long the logger thread holds a line before writing it, so that lines buffered on other
/// workers at the same moment (handed over up to a flush period later) can be merged in
/// front of it: each worker hands its buffer over every ~100 ms, so lines older than this have
/// all arrived unless an event loop stalled.
const HOLD: Duration = Duration::from_millis(300);
/// How often the logger thread looks for lines past [`HOLD`] when nothing arrives.
const TICK: Duration = Duration::from_millis(50);

/// Lines of one buffer with the time of each: `marks[i]` is (unix microseconds, end offset of
/// line `i` in `buf`). Lines of one thread are in time order within it.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    marks: Vec<(u64, usize)>,
}

impl Batch {
    fn with_capacity() -> Batch {
        Batch {
            buf: Vec::with_capacity(BUFFER_CAPACITY),
            marks: Vec::with_capacity(BUFFER_CAPACITY / 128),
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.marks.clear();
    }
}

fn micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The reorder buffer: batches from every thread, written out in timestamp order.
#[derive(Default)]
struct Merge {
    /// Each batch with the index of its next unwritten line.
    pending: Vec<(Batch, usize)>,
}

impl Merge {
    fn push(&mut self, batch: Batch) {
        if !batch.marks.is_empty() {
            self.pending.push((batch, 0));
        }
    }

    /// Appends to `out`, oldest first, every pending line stamped at or before `until`, and
    /// gives back the batches that were written out whole. A few batches are pending at a time
    /// (about one per worker per flush), so a scan for the oldest head is enough.
    fn drain_until(&mut self, until: u64, out: &mut Vec<u8>) -> Vec<Batch> {
        let mut done = Vec::new();
        loop {
            let oldest = self
                .pending
                .iter()
                .enumerate()
                .map(|(i, (b, next))| (b.marks[*next].0, i))
                .min();
            let Some((_, i)) = oldest.filter(|(at, _)| *at <= until) else {
                return done;
            };
            let (batch, next) = &mut self.pending[i];
            let begin = if *next == 0 {
                0
            } else {
                batch.marks[*next - 1].1
            };
            out.extend_from_slice(&batch.buf[begin..batch.marks[*next].1]);
            *next += 1;
            if *next == batch.marks.len() {
                done.push(self.pending.swap_remove(i).0);
            }
        }
    }
}

enum Msg {
    Lines(Batch),
    Flush(Sender<()>),
}

struct Logger {
    tx: Sender<Msg>,
    /// Empty batches coming back from the logger thread, so workers do not allocate new ones.
    spare: Receiver<Batch>,
    /// The lines held back for ordering. Its lock is also held while writing to stderr, so a
    /// line written at once by another thread (see [`deliver`]) goes out after the held lines
    /// older than it and never inside another write.
    merge: std::sync::Arc<std::sync::Mutex<Merge>>,
}

fn lock(merge: &std::sync::Mutex<Merge>) -> std::sync::MutexGuard<'_, Merge> {
    merge
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes the held lines stamped at or before `until`, then `extra`, in one write.
fn write_out(merge: &std::sync::Mutex<Merge>, until: u64, extra: &[u8]) -> Vec<Batch> {
    let mut merge = lock(merge);
    let mut out = Vec::new();
    let done = merge.drain_until(until, &mut out);
    out.extend_from_slice(extra);
    if !out.is_empty() {
        let _ = std::io::stderr().lock().write_all(&out);
    }
    done
}

fn logger() -> Option<&'static Logger> {
    static LOGGER: OnceLock<Option<Logger>> = OnceLock::new();
    LOGGER
        .get_or_init(|| {
            let (tx, rx) = crossbeam_channel::bounded::<Msg>(QUEUED_BUFFERS);
            let (spare_tx, spare) = crossbeam_channel::bounded::<Batch>(QUEUED_BUFFERS);
            let merge = std::sync::Arc::new(std::sync::Mutex::new(Merge::default()));
            let held = merge.clone();
            std::thread::Builder::new()
                .name("ringyard-log".into())
                .spawn(move || loop {
                    let until = match rx.recv_timeout(TICK) {
                        Ok(Msg::Lines(batch)) => {
                            lock(&held).push(batch);
                            micros(SystemTime::now() - HOLD)
                        }
                        Ok(Msg::Flush(done)) => {
                            write_out(&held, u64::MAX, &[]);
                            let _ = done.send(());
                            continue;
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                            micros(SystemTime::now() - HOLD)
                        }
                        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                            write_out(&held, u64::MAX, &[]);
                            return;
                        }
                    };
                    for mut batch in write_out(&held, until, &[]) {
                        batch.clear();
                        let _ = spare_tx.try_send(batch);
                    }
                })
                .ok()
                .map(|_| Logger { tx, spare, merge })
        })
        .as_ref()
}

/// A worker thread's pending lines.
struct Local {
    batch: Batch,
    lines: u64,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Builds one line stamped `at` into this thread's buffer if it has one, else writes it at
/// once, after the held lines older than it.
fn deliver(at: SystemTime, build: impl FnOnce(&mut Vec<u8>)) {
    let mut build = Some(build);
    let buffered = LOCAL.with(|local| {
        let Ok(mut local) = local.try_borrow_mut() else {
            return false;
        };
        let Some(local) = local.as_mut() else {
            return false;
        };
        if let Some(build) = build.take() {
            build(&mut local.batch.buf);
            local.batch.marks.push((micros(at), local.batch.buf.len()));
            local.lines += 1;
        }
        if local.batch.buf.len() >= HAND_OFF_AT {
            hand_off(local);
        }
        true
    });
    if !buffered {
        if let Some(build) = build.take() {
            let mut line = Vec::with_capacity(256);
            build(&mut line);
            match logger() {
                Some(logger) => {
                    write_out(&logger.merge, micros(at), &line);
                }
                None => {
                    let _ = std::io::stderr().lock().write_all(&line);
                }
            }
        }
    }
}

/// Gives the buffer to the logger thread without waiting; if it cannot take it, the lines
/// are counted as dropped and the buffer is reused.
fn hand_off(local: &mut Local) {
    if local.batch.marks.is_empty() {
        return;
    }
    let lines = std::mem::take(&mut local.lines);
    let Some(logger) = logger() else {
        DROPPED.fetch_add(lines, Ordering::Relaxed);
        local.batch.clear();
        return;
    };
    let fresh = logger
        .spare
        .try_recv()
        .unwrap_or_else(|_| Batch::with_capacity());
    let full = std::mem::replace(&mut local.batch, fresh);
    match logger.tx.try_send(Msg::Lines(full)) {
        Ok(()) => {}
        Err(TrySendError::Full(Msg::Lines(mut full)))
        | Err(TrySendError::Disconnected(Msg::Lines(mut full))) => {
            DROPPED.fetch_add(lines, Ordering::Relaxed);
            full.clear();
            local.batch = full;
        }
        Err(_) => {}
    }
}

/// From now on this thread's lines are buffered (an event loop calls this at start, and
/// [`flush_thread`] from a timer).
pub fn buffer_this_thread() {
    LOCAL.with(|local| {
        *local.borrow_mut() = Some(Local {
            batch: Batch::with_capacity(),
            lines: 0,
        });
    });
}

/// Hands this thread's buffered lines to the logger thread, without waiting.
pub fn flush_thread() {
    LOCAL.with(|local| {
        if let Ok(mut local) = local.try_borrow_mut() {
            if let Some(local) = local.as_mut() {
                hand_off(local);
            }
        }
    });
}

/// Ends buffering on this thread (an event loop that stopped): its last lines are queued for
/// the logger thread, waiting a little for room, since nothing else runs here any more.
pub fn end_thread() {
    let Some(local) = LOCAL.with(|local| local.borrow_mut().take()) else {
        return;
    };
    if local.batch.marks.is_empty() {
        return;
    }
    let sent = logger().is_some_and(|l| {
        l.tx.send_timeout(Msg::Lines(local.batch), Duration::from_secs(1))
            .is_ok()
    });
    if !sent {
        DROPPED.fetch_add(local.lines, Ordering::Relaxed);
    }
}

/// Waits (bounded) until every line queued for the logger thread is written, held ones
/// included: at shutdown, after the event loops ended.
pub fn flush() {
    flush_thread();
    let Some(logger) = logger() else { return };
    let (done, written) = crossbeam_channel::bounded(1);
    if logger
        .tx
        .send_timeout(Msg::Flush(done), Duration::from_secs(2))
        .is_ok()
    {
        let _ = written.recv_timeout(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_parse_as_s3_writes_them() {
        assert_eq!(parse_utc_millis("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_utc_millis("1970-01-02T00:00:01Z"), Some(86_401_000));
        // 2026-12-07T19:02:09.5Z, checked against `date -u -d ... +%s%3N`.
        assert_eq!(
            parse_utc_millis("2026-12-07T19:02:09.5Z"),
            Some(1_796_670_129_500)
        );
        for days in [-1000, 0, 59, 365 * 30 + 7, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        for bad in [
            "",
            "2026-12-07T19:02:09",
            "2026-13-07T19:02:09Z",
            "x-1-1T0:0:0Z",
        ] {
            assert_eq!(parse_utc_millis(bad), None, "{bad}");
        }
    }

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = |s, ms| text(|o| timestamp(o, at(s, ms)));
        assert_eq!(t(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(t(951_782_400, 7), "2000-02-29T00:00:00.007Z");
        assert_eq!(t(1_775_037_600 + 3661, 123), "2026-04-01T11:01:01.123Z");
        assert_eq!(t(253_402_300_799, 999), "9999-12-31T23:59:59.999Z");
        // The cached second is reused within the second and replaced after it.
        assert_eq!(t(86_399, 1), "1970-01-01T23:59:59.001Z");
        assert_eq!(t(86_399, 2), "1970-01-01T23:59:59.002Z");
        assert_eq!(t(86_400, 0), "1970-01-02T00:00:00.000Z");
    }

    #[test]
    fn numbers() {
        assert_eq!(text(|o| push_u64(o, 0)), "0");
        for a in [
            "10.0.255.1:0",
            "[::1]:5000",
            "[fe80::1%2]:65535",
            "255.255.255.255:65535",
        ] {
            assert_eq!(text(|o| push_addr(o, a.parse().unwrap())), a);
        }
        assert_eq!(text(|o| push_u64(o, u64::MAX)), u64::MAX.to_string());
        assert_eq!(
            text(|o| push_millis(o, Duration::from_micros(12_345))),
            "12.345"
        );
        assert_eq!(text(|o| push_millis(o, Duration::from_nanos(999))), "0.000");
        assert_eq!(
            text(|o| push_millis(o, Duration::from_micros(1_000_007))),
            "1000.007"
        );
    }

    #[test]
    fn text_and_json_lines() {
        let when = at(1_775_037_600, 5);
        let line =
            text(|o| format_line(o, LogLevel::Warn, format_args!("a\nb {}", 1), false, when));
        assert_eq!(line, "2026-04-01T10:00:00.005Z warn a b 1\n");
        let line = text(|o| format_line(o, LogLevel::Info, format_args!("say \"hi\""), true, when));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "info");
        assert_eq!(v["msg"], "say \"hi\"");
        assert_eq!(v["ts"], "2026-04-01T10:00:00.005Z");
        assert!(line.ends_with("}\n") && line.lines().count() == 1);
    }

    #[test]
    fn access_lines() {
        use crate::http::request::Method;
        use crate::observe::RouteClass;
        let when = at(1_775_037_600, 0);
        let mut x = Exchange {
            method: Method::Put,
            route: RouteClass::Manifest,
            repository: Some("lib/app"),
            user: Some("alice"),
            status: 201,
            received: 1234,
            sent: 0,
            elapsed: Duration::from_micros(2_500),
            request_id: "ab\"c",
            remote: Some("127.0.0.1:5555".parse().unwrap()),
        };
        let line = text(|o| format_access(o, &x, false, when));
        assert_eq!(
            line,
            "2026-04-01T10:00:00.000Z info access method=PUT route=manifest repository=lib/app \
             status=201 received=1234 sent=0 duration_ms=2.500 request_id=ab\"c remote=127.0.0.1:5555 \
             user=alice\n"
        );
        let line = text(|o| format_access(o, &x, true, when));
        assert!(line.ends_with("}\n") && line.lines().count() == 1);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let mut want = serde_json::json!({
            "ts": "2026-04-01T10:00:00.000Z", "level": "info", "msg": "access",
            "method": "PUT", "route": "manifest", "repository": "lib/app", "user": "alice", "status": 201,
            "received": 1234, "sent": 0, "duration_ms": 2.5, "request_id": "ab\"c",
            "remote": "127.0.0.1:5555"
        });
        assert_eq!(v, want);
        x.repository = None;
        x.user = None;
        x.remote = None;
        let v: serde_json::Value =
            serde_json::from_str(&text(|o| format_access(o, &x, true, when))).unwrap();
        want["repository"] = serde_json::Value::Null;
        want["user"] = serde_json::Value::Null;
        want["remote"] = serde_json::Value::Null;
        assert_eq!(v, want);
        let line = text(|o| format_access(o, &x, false, when));
        assert!(
            line.contains(" repository=- ") && line.ends_with(" remote=- user=-\n"),
            "{line}"
        );
    }

    fn batch(lines: &[(u64, &str)]) -> Batch {
        let mut b = Batch::default();
        for (at, text) in lines {
            b.buf.extend_from_slice(text.as_bytes());
            b.marks.push((*at, b.buf.len()));
        }
        b
    }

    /// Buffers of two workers covering the same moments come out as one ordered stream; lines
    /// newer than the limit stay held until a later drain.
    #[test]
    fn held_lines_merge_in_time_order() {
        let mut m = Merge::default();
        m.push(batch(&[(10, "a10\n"), (30, "a30\n"), (50, "a50\n")]));
        m.push(batch(&[(20, "b20\n"), (30, "b30\n"), (60, "b60\n")]));
        m.push(Batch::default());
        let mut out = Vec::new();
        let done = m.drain_until(40, &mut out);
        assert_eq!(out, b"a10\nb20\na30\nb30\n");
        assert!(done.is_empty());
        m.push(batch(&[(45, "c45\n")]));
        out.clear();
        let done = m.drain_until(u64::MAX, &mut out);
        assert_eq!(out, b"c45\na50\nb60\n");
        assert_eq!(
            done.len(),
            3,
            "batches written out whole come back for reuse"
        );
        assert!(m.pending.is_empty());
    }

    #[test]
    fn a_buffering_thread_counts_its_lines_and_ends_cleanly() {
        std::thread::spawn(|| {
            buffer_this_thread();
            for _ in 0..10 {
                deliver(SystemTime::now(), |o| o.extend_from_slice(b""));
            }
            let pending = LOCAL.with(|l| l.borrow().as_ref().map(|l| l.lines));
            assert_eq!(pending, Some(10));
            end_thread();
            assert!(LOCAL.with(|l| l.borrow().is_none()));
        })
        .join()
        .unwrap();
        flush();
    }
}
