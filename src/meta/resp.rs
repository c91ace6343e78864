//! RESP2, the Redis protocol, as pure functions: commands encoded into bytes, replies decoded
//! from a buffer that may hold part of one. The cache ([`super::redis_cache`]) does the I/O.
//!
//! Our own rather than the `redis` crate: the cache needs five commands over one blocking
//! socket on the engine threads, and RESP2 is a few lines of framing; the crate's sync client
//! would bring its connection manager and URL handling for that. Only what those commands can
//! answer is decoded (RESP2: simple strings, errors, integers, bulk strings, arrays).

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Simple(String),
    Error(String),
    Integer(i64),
    /// None: the null bulk string (`$-1`), a missing key.
    Bulk(Option<Vec<u8>>),
    /// None: the null array.
    Array(Option<Vec<Value>>),
}

/// Appends `args` as one command (an array of bulk strings) to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// The reply a stream does not follow the protocol with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Malformed(pub String);

/// Deepest array nesting accepted: the commands used get flat arrays back.
const MAX_DEPTH: usize = 8;

/// Decodes the first reply in `buf`: `Ok(Some((value, bytes used)))`, `Ok(None)` when `buf`
/// holds only part of it (read more and call again), or an error for bytes that are not RESP.
pub(crate) fn decode(buf: &[u8]) -> Result<Option<(Value, usize)>, Malformed> {
    decode_at(buf, 0, 0)
}

fn decode_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, Malformed> {
    let Some((line, next)) = line(buf, at)? else {
        return Ok(None);
    };
    let (kind, text) = line
        .split_first()
        .ok_or_else(|| Malformed("empty reply line".into()))?;
    let text_str = || {
        std::str::from_utf8(text)
            .map(str::to_owned)
            .map_err(|_| Malformed("reply line is not UTF-8".into()))
    };
    let number = || -> Result<i64, Malformed> {
        text_str()?
            .parse()
            .map_err(|_| Malformed(format!("not a number: {:?}", String::from_utf8_lossy(text))))
    };
    Ok(Some(match kind {
        b'+' => (Value::Simple(text_str()?), next),
        b'-' => (Value::Error(text_str()?), next),
        b':' => (Value::Integer(number()?), next),
        b'$' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((Value::Bulk(None), next)));
            }
            let n = usize::try_from(n).map_err(|_| Malformed("bulk length".into()))?;
            let end = next + n;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(Malformed("bulk string not followed by CRLF".into()));
            }
            (Value::Bulk(Some(buf[next..end].to_vec())), end + 2)
        }
        b'*' => {
            let n = number()?;
            if n < 0 {
                return Ok(Some((Value::Array(None), next)));
            }
            if depth >= MAX_DEPTH {
                return Err(Malformed("arrays nested too deep".into()));
            }
            let mut items = Vec::new();
            let mut at = next;
            for _ in 0..n {
                let Some((v, after)) = decode_at(buf, at, depth + 1)? else {
                    return Ok(None);
                };
                items.push(v);
                at = after;
            }
            (Value::Array(Some(items)), at)
        }
        other => {
            return Err(Malformed(format!(
                "unknown reply type {:?}",
                char::from(*other)
            )))
        }
    }))
}

/// The line starting at `at` without its CRLF, and where the next starts.
fn line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, Malformed> {
    let rest = buf.get(at..).unwrap_or_default();
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(i) => Ok(Some((&rest[..i], at + i + 2))),
        // A reply line is short; a long run without CRLF is not RESP.
        None if rest.len() > 64 * 1024 => Err(Malformed("reply line without CRLF".into())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"SET", b"k", b"a\r\nb"]);
        encode(&mut out, &[b"PING"]);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n*1\r\n$4\r\nPING\r\n"
        );
    }

    #[test]
    fn every_reply_type_decodes() {
        let cases: &[(&[u8], Value)] = &[
            (b"+OK\r\n", Value::Simple("OK".into())),
            (b"-ERR bad\r\n", Value::Error("ERR bad".into())),
            (b":-42\r\n", Value::Integer(-42)),
            (b"$-1\r\n", Value::Bulk(None)),
            (b"$0\r\n\r\n", Value::Bulk(Some(vec![]))),
            (b"$4\r\na\r\nb\r\n", Value::Bulk(Some(b"a\r\nb".to_vec()))),
            (b"*-1\r\n", Value::Array(None)),
            (
                b"*3\r\n$1\r\nx\r\n$-1\r\n:1\r\n",
                Value::Array(Some(vec![
                    Value::Bulk(Some(b"x".to_vec())),
                    Value::Bulk(None),
                    Value::Integer(1),
                ])),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                decode(bytes),
                Ok(Some((want.clone(), bytes.len()))),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// Every proper prefix of a reply asks for more; the whole reply decodes, and what follows
    /// it is left for the next call.
    #[test]
    fn partial_replies_ask_for_more() {
        let reply = b"*2\r\n$5\r\nhello\r\n:7\r\n+NEXT\r\n";
        let first = reply.len() - b"+NEXT\r\n".len();
        for cut in 0..first {
            assert_eq!(decode(&reply[..cut]), Ok(None), "cut at {cut}");
        }
        let (v, used) = decode(reply).unwrap().unwrap();
        assert_eq!(used, first);
        assert_eq!(
            v,
            Value::Array(Some(vec![
                Value::Bulk(Some(b"hello".to_vec())),
                Value::Integer(7)
            ]))
        );
        assert_eq!(
            decode(&reply[used..]),
            Ok(Some((Value::Simple("NEXT".into()), 7)))
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert!(decode(b"?what\r\n").is_err());
        assert!(decode(b":12x\r\n").is_err());
        assert!(decode(b"$3\r\nabcXY").is_err());
        assert!(decode(b"\r\n").is_err());
        assert!(decode(&[b'+'; 70 * 1024]).is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(decode(deep.as_bytes()).is_err());
    }
}
