//! Decoder of chunked response bodies (RFC 9112 section 7.1) as a state machine over
//! whatever bytes have arrived, handing out data in place (no copy). Pure.

use crate::error::{Error, Result};
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size; `digits` seen so far.
    Size {
        value: u64,
        digits: u8,
    },
    /// After the size: optional whitespace before an extension or the line end.
    SizeWs {
        value: u64,
    },
    /// Skipping a chunk extension up to the line end.
    Ext {
        value: u64,
    },
    /// Expecting LF after the size line's CR.
    SizeLf {
        value: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    TrailerLine,
    /// Expecting the LF that ends the body.
    EndLf,
    Done,
}

/// One step of decoding: `consumed` bytes of the input were used, `data` (a range of the
/// input inside those bytes) is body data, `done` says the final chunk and trailers ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub data: Range<usize>,
    pub done: bool,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }

    #[cfg(test)]
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the start of `input` up to the first data run (returned as a range) or
    /// the end of the body or of the input. Call again with the rest after consuming.
    pub fn step(&mut self, input: &[u8]) -> Result<Step> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::Data { left } => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data { left }
                    };
                    return Ok(Step {
                        consumed: i + take,
                        data: i..i + take,
                        done: false,
                    });
                }
                State::Size { value, digits } => {
                    if let Some(d) = hex(b) {
                        if digits >= 16 {
                            return Err(bad("chunk size too large"));
                        }
                        self.state = State::Size {
                            value: (value << 4) | u64::from(d),
                            digits: digits + 1,
                        };
                    } else if digits == 0 {
                        return Err(bad("chunk size expected"));
                    } else {
                        self.after_size(value, b)?;
                    }
                }
                State::SizeWs { value } => self.after_size(value, b)?,
                State::Ext { value } => match b {
                    b'\r' => self.state = State::SizeLf { value },
                    b'\n' => self.size_line_done(value),
                    _ => {}
                },
                State::SizeLf { value } => {
                    if b != b'\n' {
                        return Err(bad("LF expected after chunk size"));
                    }
                    self.size_line_done(value);
                }
                State::DataCr => match b {
                    b'\r' => self.state = State::DataLf,
                    b'\n' => {
                        self.state = State::Size {
                            value: 0,
                            digits: 0,
                        }
                    }
                    _ => return Err(bad("CRLF expected after chunk data")),
                },
                State::DataLf => {
                    if b != b'\n' {
                        return Err(bad("LF expected after chunk data"));
                    }
                    self.state = State::Size {
                        value: 0,
                        digits: 0,
                    };
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::EndLf,
                    b'\n' => {
                        self.state = State::Done;
                        i += 1;
                        break;
                    }
                    _ => self.state = State::TrailerLine,
                },
                State::TrailerLine => {
                    if b == b'\n' {
                        self.state = State::TrailerStart;
                    }
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(bad("LF expected at the end of a chunked body"));
                    }
                    self.state = State::Done;
                    i += 1;
                    break;
                }
            }
            i += 1;
        }
        Ok(Step {
            consumed: i,
            data: i..i,
            done: self.state == State::Done,
        })
    }

    fn after_size(&mut self, value: u64, b: u8) -> Result<()> {
        match b {
            b' ' | b'\t' => self.state = State::SizeWs { value },
            b';' => self.state = State::Ext { value },
            b'\r' => self.state = State::SizeLf { value },
            b'\n' => self.size_line_done(value),
            _ => return Err(bad("invalid character in chunk size")),
        }
        Ok(())
    }

    fn size_line_done(&mut self, value: u64) {
        self.state = if value == 0 {
            State::TrailerStart
        } else {
            State::Data { left: value }
        };
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn bad(msg: &str) -> Error {
    Error::protocol(format!("chunked body: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `piece` bytes; returns (data, done, bytes consumed).
    fn decode(input: &[u8], piece: usize) -> Result<(Vec<u8>, bool, usize)> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut consumed_total = 0;
        for part in input.chunks(piece) {
            pending.extend_from_slice(part);
            loop {
                let s = d.step(&pending)?;
                out.extend_from_slice(&pending[s.data.clone()]);
                pending.drain(..s.consumed);
                consumed_total += s.consumed;
                if s.done {
                    return Ok((out, true, consumed_total));
                }
                if s.consumed == 0 || pending.is_empty() {
                    break;
                }
            }
        }
        Ok((out, d.is_done(), consumed_total))
    }

    #[test]
    fn simple_body_any_split() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\nNEXT";
        for piece in 1..body.len() + 1 {
            let (data, done, used) = decode(body, piece).unwrap();
            assert_eq!(data, b"hello, world", "piece {piece}");
            assert!(done);
            assert_eq!(
                used,
                body.len() - 4,
                "the next response's bytes stay unread"
            );
        }
    }

    #[test]
    fn trailers_and_hex_case() {
        let body = b"A\r\n0123456789\r\na \r\nabcdefghij\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n";
        let (data, done, used) = decode(body, 3).unwrap();
        assert_eq!(data, b"0123456789abcdefghij");
        assert!(done);
        assert_eq!(used, body.len());
    }

    #[test]
    fn bare_lf_tolerated() {
        let (data, done, _) = decode(b"3\nabc\n0\n\n", 2).unwrap();
        assert_eq!(data, b"abc");
        assert!(done);
    }

    #[test]
    fn incomplete_is_not_done() {
        let (data, done, _) = decode(b"5\r\nhel", 100).unwrap();
        assert_eq!(data, b"hel");
        assert!(!done);
    }

    #[test]
    fn errors() {
        assert!(decode(b"x\r\n", 10).is_err());
        assert!(decode(b"\r\n", 10).is_err());
        assert!(decode(b"3\r\nabcX", 10).is_err());
        assert!(decode(b"3\rX", 10).is_err());
        assert!(decode(b"11111111111111111\r\n", 100).is_err());
        assert!(decode(b"3 x\r\n", 100).is_err());
    }

    #[test]
    fn large_chunk_size() {
        let mut d = ChunkedDecoder::new();
        let s = d.step(b"ffffffff\r\nab").unwrap();
        assert_eq!(s.data, 10..12);
        assert!(!s.done);
    }
}
