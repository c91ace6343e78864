//! Generated data: deterministic bytes of any length, produced, hashed and sent in pieces so
//! that a test of a 10 GiB body holds a piece, never the body.

#![allow(dead_code)]

use super::*;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256, Sha512};

// ---------------------------------------------------------------------------------------------
// Generated data
// ---------------------------------------------------------------------------------------------

/// The generators' piece size: bodies too large to hold are generated, hashed and sent in pieces
/// of this many bytes.
pub const GEN_PIECE: usize = 1 << 20;

/// Word `i` (bytes `8 * i ..`) of the generator for `seed`: splitmix64's output for the state
/// `seed + (i + 1) * golden`, so that every word can be computed on its own.
fn generated_word(seed: u64, i: u64) -> [u8; 8] {
    let mut z = seed.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).to_le_bytes()
}

/// Fills `buf` with the deterministic bytes of the generator for `seed` from byte `offset` of its
/// stream on. Each byte depends only on (seed, its offset), so any range of a body too large to
/// hold can be regenerated on its own (e.g. to compare a Range response); any offset and length.
pub fn fill_generated(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut word = offset / 8;
    let skip = (offset % 8) as usize;
    let mut rest = buf;
    if skip != 0 {
        let n = (8 - skip).min(rest.len());
        let (head, after) = rest.split_at_mut(n);
        head.copy_from_slice(&generated_word(seed, word)[skip..skip + n]);
        rest = after;
        word += 1;
    }
    let last_word = word + (rest.len() / 8) as u64;
    let mut words = rest.chunks_exact_mut(8);
    for (w, i) in (&mut words).zip(word..) {
        w.copy_from_slice(&generated_word(seed, i));
    }
    let last = words.into_remainder();
    let n = last.len();
    last.copy_from_slice(&generated_word(seed, last_word)[..n]);
}

/// `len` bytes of the generator for `seed` (see [`fill_generated`]) from its start.
pub fn generated(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill_generated(seed, 0, &mut out);
    out
}

/// Deterministic pseudo-random bytes, distinct per seed: [`generated`] with the arguments the
/// other way round.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    generated(seed, len)
}

/// Writes `len` generator bytes for `seed` from byte `offset` on to `w`, in pieces of
/// [`GEN_PIECE`] bytes, hashing them into `h` as they go (the bytes are never held whole);
/// panics naming the byte at which a write failed.
pub fn send_generated(w: &mut impl Write, seed: u64, offset: u64, len: u64, h: &mut Sha256) {
    let mut buf = vec![0u8; GEN_PIECE];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(GEN_PIECE as u64) as usize;
        fill_generated(seed, offset + off, &mut buf[..n]);
        h.update(&buf[..n]);
        if let Err(e) = w.write_all(&buf[..n]) {
            panic!("sending the body failed at byte {off} of {len}: {e}");
        }
        off += n as u64;
    }
}

/// `sha256:<hex>` of the first `len` generator bytes for `seed`, computed piecewise without
/// holding them.
pub fn generated_digest(seed: u64, len: u64) -> String {
    let mut h = Sha256::new();
    send_generated(&mut io::sink(), seed, 0, len, &mut h);
    finish_digest(h)
}
