//! The chunked transfer coding (RFC 9112 section 7.1) as a state machine without IO: fed the
//! bytes that have arrived, it says how many it used and what they were (body data as a range
//! of the input, a need for more, the end of the body, or broken framing and why). The server's
//! request bodies, the load generator's responses and the tests' clients all decode with it.
//!
//! It holds no bytes itself, so data is never copied here, and a caller that reads chunk data
//! some other way (straight from a socket into its own buffer) only tells it how many data
//! bytes it took ([`Decoder::data_read`]).
//!
//! What it accepts: a size of 1 to 15 hex digits in either case (leading zeros count), optional
//! spaces or tabs around it, extensions after `;` ignored, CRLF line ends (not a bare LF),
//! CRLF right after each chunk's data, and trailers read and discarded. Bytes after the end of
//! the body are never consumed: they are the next message on the connection.

use std::fmt;
use std::ops::Range;

/// Longest chunk-size line (with extensions, without its CRLF).
pub const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section (its field lines with their CRLFs).
pub const MAX_TRAILERS: usize = 16 * 1024;
/// More hex digits than this could overflow a u64 size; no real chunk needs them.
const MAX_SIZE_DIGITS: u8 = 15;

/// Broken framing, with the reason a client or server is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Malformed {}

/// What the consumed bytes were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Body data at this range of the input; it ends where the consumed bytes end.
    Data(Range<usize>),
    /// Framing only, and all of the input: feed more.
    NeedMore,
    /// The body ended with the consumed bytes (last chunk, trailers and the final CRLF).
    End,
}

/// One call's answer: the first `consumed` bytes of the input are used up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub event: Event,
}

/// Where in the size line we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SizePart {
    /// Spaces before the first digit.
    Lead,
    Digits,
    /// Spaces after the digits.
    Trail,
    /// A chunk extension, ignored up to the line end.
    Ext,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a chunk-size line: `len` bytes of it so far; `cr` if the last one was CR.
    Size {
        part: SizePart,
        value: u64,
        digits: u8,
        len: usize,
        cr: bool,
    },
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// After chunk data: expecting CR, then LF.
    DataCr,
    DataLf,
    /// After the last chunk: `total` bytes of finished trailer lines, `line` bytes of the
    /// current one (its CR included), `cr` if the last byte was CR.
    Trailers {
        total: usize,
        line: usize,
        cr: bool,
    },
    Done,
}

const SIZE_START: State = State::Size {
    part: SizePart::Lead,
    value: 0,
    digits: 0,
    len: 0,
    cr: false,
};

const TRAILERS_START: State = State::Trailers {
    total: 0,
    line: 0,
    cr: false,
};

#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder { state: SIZE_START }
    }

    /// The body's end was consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes left in the current chunk, when the next input byte is chunk data.
    pub fn data_left(&self) -> Option<u64> {
        match self.state {
            State::Data(left) => Some(left),
            _ => None,
        }
    }

    /// Records `n` data bytes taken without [`Decoder::feed`] (read straight into the
    /// caller's buffer); `n` is at most [`Decoder::data_left`].
    pub fn data_read(&mut self, n: u64) {
        if let State::Data(left) = self.state {
            debug_assert!(n <= left, "{n} data bytes read with {left} left");
            self.state = data_after(left - n.min(left));
        }
    }

    /// Decodes from the start of `input` up to the first data run, the end of the body or the
    /// end of the input, whichever comes first.
    pub fn feed(&mut self, input: &[u8]) -> Result<Step, Malformed> {
        self.feed_at_most(input, usize::MAX)
    }

    /// As [`Decoder::feed`], with a data run of at most `max_data` bytes (more than 0), for a
    /// caller with that much room.
    pub fn feed_at_most(&mut self, input: &[u8], max_data: usize) -> Result<Step, Malformed> {
        debug_assert!(max_data > 0);
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => break,
                State::Data(left) => {
                    let take = (input.len() - i)
                        .min(max_data)
                        .min(usize::try_from(left).unwrap_or(usize::MAX));
                    self.state = data_after(left - take as u64);
                    return Ok(Step {
                        consumed: i + take,
                        event: Event::Data(i..i + take),
                    });
                }
                _ => {}
            }
            self.state = framing_byte(self.state, input[i])?;
            i += 1;
        }
        let event = if self.state == State::Done {
            Event::End
        } else {
            Event::NeedMore
        };
        Ok(Step { consumed: i, event })
    }
}

/// One byte of a size line, of the CRLF after data, or of the trailers.
fn framing_byte(state: State, b: u8) -> Result<State, Malformed> {
    let next = match state {
        State::Size {
            part,
            value,
            digits,
            len,
            cr,
        } => {
            if cr && b == b'\n' {
                return match (digits, value) {
                    (0, _) => Err(INVALID_SIZE),
                    (_, 0) => Ok(TRAILERS_START),
                    (_, n) => Ok(State::Data(n)),
                };
            }
            let len = len + 1;
            // The line's own CR is the one byte allowed past the limit.
            if len > MAX_CHUNK_LINE + 1 {
                return Err(Malformed("line too long in chunked body"));
            }
            let (part, value, digits) = match (part, b, hex(b)) {
                // Extensions are skipped whole, a CR not before LF included.
                (SizePart::Ext, _, _) => (part, value, digits),
                // Outside an extension only the line's end may follow a CR.
                _ if cr => return Err(INVALID_SIZE),
                (_, b'\r', _) => (part, value, digits),
                (SizePart::Lead | SizePart::Digits, _, Some(d)) => {
                    if digits == MAX_SIZE_DIGITS {
                        return Err(INVALID_SIZE);
                    }
                    (SizePart::Digits, (value << 4) | u64::from(d), digits + 1)
                }
                (SizePart::Lead | SizePart::Trail, b' ' | b'\t', _) => (part, value, digits),
                (SizePart::Digits, b' ' | b'\t', _) => (SizePart::Trail, value, digits),
                (SizePart::Digits | SizePart::Trail, b';', _) => (SizePart::Ext, value, digits),
                _ => return Err(INVALID_SIZE),
            };
            State::Size {
                part,
                value,
                digits,
                len,
                cr: b == b'\r',
            }
        }
        State::DataCr if b == b'\r' => State::DataLf,
        State::DataLf if b == b'\n' => SIZE_START,
        State::DataCr | State::DataLf => return Err(Malformed("chunk data longer than its size")),
        State::Trailers { total, line, cr } => {
            if cr && b == b'\n' {
                if line == 1 {
                    State::Done
                } else {
                    // The line's CR is in `line`; its LF is this byte.
                    let total = total + line + 1;
                    if total > MAX_TRAILERS {
                        return Err(TRAILERS_TOO_LARGE);
                    }
                    State::Trailers {
                        total,
                        line: 0,
                        cr: false,
                    }
                }
            } else {
                let line = line + 1;
                // Bounded before the line ends; the slack is for the final empty line.
                if total + line > MAX_TRAILERS + 1 {
                    return Err(TRAILERS_TOO_LARGE);
                }
                State::Trailers {
                    total,
                    line,
                    cr: b == b'\r',
                }
            }
        }
        State::Data(_) | State::Done => unreachable!("not framing"),
    };
    Ok(next)
}

const INVALID_SIZE: Malformed = Malformed("invalid chunk size");
const TRAILERS_TOO_LARGE: Malformed = Malformed("trailers too large");

/// The state once a chunk has `left` data bytes to go.
fn data_after(left: u64) -> State {
    match left {
        0 => State::DataCr,
        n => State::Data(n),
    }
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` one after the other as a connection would deliver them (unconsumed
    /// bytes stay for the next call). Returns the data, whether the end was seen, and the
    /// bytes left unconsumed.
    fn decode_pieces(pieces: &[&[u8]]) -> Result<(Vec<u8>, bool, Vec<u8>), Malformed> {
        let mut d = Decoder::new();
        let mut data = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            pending.extend_from_slice(piece);
            loop {
                let s = d.feed(&pending)?;
                let event = s.event.clone();
                if let Event::Data(r) = &event {
                    assert_eq!(r.end, s.consumed);
                    data.extend_from_slice(&pending[r.clone()]);
                }
                pending.drain(..s.consumed);
                match event {
                    Event::End => {
                        // What arrives after the end is never the body's.
                        pending.extend(pieces[i + 1..].concat());
                        return Ok((data, true, pending));
                    }
                    Event::NeedMore => break,
                    Event::Data(_) if pending.is_empty() => break,
                    Event::Data(_) => {}
                }
            }
        }
        Ok((data, d.is_done(), pending))
    }

    fn decode(input: &[u8]) -> Result<(Vec<u8>, bool, Vec<u8>), Malformed> {
        decode_pieces(&[input])
    }

    fn error(input: &[u8]) -> &'static str {
        match decode(input) {
            Err(Malformed(m)) => m,
            Ok(r) => panic!("{:?} decoded as {r:?}", String::from_utf8_lossy(input)),
        }
    }

    const SAMPLE: &[u8] =
        b"5\r\nhello\r\n07;name=value;x\r\n, world\r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";

    #[test]
    fn a_sample_body_decodes_the_same_at_every_split() {
        let (data, done, rest) = decode(SAMPLE).unwrap();
        assert_eq!(data, b"hello, world0123456789");
        assert!(done);
        assert_eq!(rest, b"NEXT");
        // One byte at a time.
        let bytes: Vec<&[u8]> = SAMPLE.chunks(1).collect();
        assert_eq!(
            decode_pieces(&bytes).unwrap(),
            (data.clone(), true, rest.clone())
        );
        // Every split into two pieces.
        for at in 0..=SAMPLE.len() {
            let (a, b) = SAMPLE.split_at(at);
            assert_eq!(
                decode_pieces(&[a, b]).unwrap(),
                (data.clone(), true, rest.clone()),
                "split at {at}"
            );
        }
    }

    #[test]
    fn sizes_in_either_case_with_leading_zeros_and_spaces() {
        let (data, done, _) = decode(b"a\r\n0123456789\r\nA\r\nabcdefghij\r\n0\r\n\r\n").unwrap();
        assert_eq!(data.len(), 20);
        assert!(done);
        let (data, _, _) = decode(b"00003\r\nabc\r\n000\r\n\r\n").unwrap();
        assert_eq!(data, b"abc");
        let (data, _, _) = decode(b" 3\t \r\nabc\r\n0\r\n\r\n").unwrap();
        assert_eq!(data, b"abc");
        let (data, _, _) = decode(b"fF\r\n").unwrap();
        assert!(data.is_empty());
        let mut d = Decoder::new();
        d.feed(b"fF\r\n").unwrap();
        assert_eq!(d.data_left(), Some(255));
    }

    #[test]
    fn fifteen_digits_at_most() {
        let mut d = Decoder::new();
        let s = d.feed(b"fffffffffffffff\r\nab").unwrap();
        assert_eq!(s.event, Event::Data(17..19));
        assert_eq!(d.data_left(), Some((1 << 60) - 1 - 2));
        assert_eq!(error(b"1000000000000000\r\n"), "invalid chunk size");
        assert_eq!(error(b"0000000000000001\r\n"), "invalid chunk size");
    }

    #[test]
    fn extensions_are_ignored() {
        let (data, done, _) =
            decode(b"3;a=b\r\nabc\r\n2 ; q=\"x;y\"\rz\r\nde\r\n0;last\r\n\r\n").unwrap();
        assert_eq!(data, b"abcde");
        assert!(done);
    }

    #[test]
    fn broken_size_lines() {
        assert_eq!(error(b"\r\n"), "invalid chunk size");
        assert_eq!(error(b";ext\r\n"), "invalid chunk size");
        assert_eq!(error(b"g\r\n"), "invalid chunk size");
        assert_eq!(error(b"-1\r\n"), "invalid chunk size");
        assert_eq!(error(b"3 4\r\n"), "invalid chunk size");
        assert_eq!(error(b"3\rx\n"), "invalid chunk size");
        // A bare LF does not end a line.
        assert_eq!(error(b"3\nabc"), "invalid chunk size");
    }

    #[test]
    fn a_size_line_longer_than_the_limit() {
        let mut ok = b"1;".to_vec();
        ok.resize(MAX_CHUNK_LINE, b'x');
        ok.extend_from_slice(b"\r\nz\r\n0\r\n\r\n");
        assert_eq!(decode(&ok).unwrap().0, b"z");
        let mut long = b"1;".to_vec();
        long.resize(MAX_CHUNK_LINE + 1, b'x');
        long.extend_from_slice(b"\r\n");
        assert_eq!(error(&long), "line too long in chunked body");
        // Without its end in sight too.
        let mut endless = b"1;".to_vec();
        endless.resize(MAX_CHUNK_LINE + 2, b'x');
        assert_eq!(error(&endless), "line too long in chunked body");
    }

    #[test]
    fn data_must_end_with_crlf() {
        assert_eq!(
            error(b"3\r\nabcd\r\n0\r\n\r\n"),
            "chunk data longer than its size"
        );
        assert_eq!(error(b"3\r\nabc\rx"), "chunk data longer than its size");
        assert_eq!(
            error(b"3\r\nabc\n0\r\n\r\n"),
            "chunk data longer than its size"
        );
    }

    #[test]
    fn trailers_are_read_and_dropped_up_to_the_limit() {
        let (data, done, rest) = decode(b"1\r\nx\r\n0\r\nA: 1\r\nB: 2\r\n\r\nGET").unwrap();
        assert_eq!(
            (data.as_slice(), done, rest.as_slice()),
            (&b"x"[..], true, &b"GET"[..])
        );

        let field = |n: usize| {
            let mut f = b"X: ".to_vec();
            f.resize(n - 2, b'v');
            f.extend_from_slice(b"\r\n");
            f
        };
        let mut at_limit = b"0\r\n".to_vec();
        at_limit.extend(field(MAX_TRAILERS / 2));
        at_limit.extend(field(MAX_TRAILERS / 2));
        at_limit.extend_from_slice(b"\r\n");
        assert!(decode(&at_limit).unwrap().1);

        let mut over = b"0\r\n".to_vec();
        over.extend(field(MAX_TRAILERS / 2));
        over.extend(field(MAX_TRAILERS / 2 + 1));
        over.extend_from_slice(b"\r\n");
        assert_eq!(error(&over), "trailers too large");
        // One endless line is cut off at the limit, not buffered.
        let mut endless = b"0\r\nX: ".to_vec();
        endless.resize(MAX_TRAILERS + 8, b'v');
        assert_eq!(error(&endless), "trailers too large");
    }

    #[test]
    fn the_last_chunk_alone_and_what_follows_it() {
        let mut d = Decoder::new();
        assert_eq!(
            d.feed(b"0\r\n\r\n").unwrap(),
            Step {
                consumed: 5,
                event: Event::End
            }
        );
        assert!(d.is_done());
        // The next request on the connection stays unconsumed.
        let mut d = Decoder::new();
        let next = b"0\r\n\r\nPATCH /v2/ HTTP/1.1\r\n";
        assert_eq!(d.feed(next).unwrap().consumed, 5);
        assert_eq!(d.feed(&next[5..]).unwrap().consumed, 0);
    }

    #[test]
    fn an_unfinished_body_needs_more() {
        let (data, done, _) = decode(b"5\r\nhel").unwrap();
        assert_eq!((data.as_slice(), done), (&b"hel"[..], false));
        let mut d = Decoder::new();
        assert_eq!(
            d.feed(b"5\r").unwrap(),
            Step {
                consumed: 2,
                event: Event::NeedMore
            }
        );
        assert_eq!(d.feed(b"").unwrap().event, Event::NeedMore);
    }

    #[test]
    fn data_taken_elsewhere_and_limited_runs() {
        let mut d = Decoder::new();
        assert_eq!(d.feed(b"6\r\n").unwrap().event, Event::NeedMore);
        assert_eq!(d.data_left(), Some(6));
        // Four bytes read straight from a socket.
        d.data_read(4);
        assert_eq!(d.data_left(), Some(2));
        // The rest from a buffer, one byte per call.
        let s = d.feed_at_most(b"ef\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!(s.event, Event::Data(0..1));
        let s = d.feed_at_most(b"f\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!(s.event, Event::Data(0..1));
        assert_eq!(d.data_left(), None);
        let s = d.feed(b"\r\n0\r\n\r\n").unwrap();
        assert_eq!((s.consumed, s.event), (7, Event::End));
    }
}
