//! Repairs the `\xNN` escapes that Telegram Desktop writes for control characters.
//!
//! tdesktop's `SerializeString` writes bytes 0x00–0x1F other than `\n \r \t` as `\xNN`, which
//! is not JSON (telegram-format.md §2). Rewriting each `\x` that starts an escape into `\u00`
//! turns them into valid JSON escapes of the same character while streaming, so the parser
//! never needs the whole file in memory. Column numbers in later error messages on the same
//! line are 2 higher per repaired escape.

use std::io::{self, Read};

/// A reader that rewrites `\xNN` escapes into `\u00NN` and drops a leading UTF-8 BOM.
pub(crate) struct EscapeRepair<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The previous byte opened an escape (an odd number of backslashes so far).
    in_escape: bool,
    /// The rest of a replacement (`u00`) that did not fit the caller's buffer.
    pending: &'static [u8],
    at_start: bool,
    repaired: u64,
    bom: bool,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl<R: Read> EscapeRepair<R> {
    pub(crate) fn new(inner: R) -> Self {
        EscapeRepair {
            inner,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            in_escape: false,
            pending: &[],
            at_start: true,
            repaired: 0,
            bom: false,
        }
    }

    /// How many `\xNN` escapes were rewritten so far.
    pub(crate) fn repaired(&self) -> u64 {
        self.repaired
    }

    /// Whether the input started with a UTF-8 byte order mark (which was skipped).
    pub(crate) fn had_bom(&self) -> bool {
        self.bom
    }

    fn fill(&mut self) -> io::Result<()> {
        self.start = 0;
        self.end = self.inner.read(&mut self.buf)?;
        if self.at_start {
            // A BOM may arrive split across reads only with absurdly small reads; read on
            // until three bytes are there or the input ends.
            while self.end < BOM.len() && self.end > 0 {
                let n = self.inner.read(&mut self.buf[self.end..])?;
                if n == 0 {
                    break;
                }
                self.end += n;
            }
            self.at_start = false;
            if self.buf[..self.end].starts_with(BOM) {
                self.start = BOM.len();
                self.bom = true;
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for EscapeRepair<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < out.len() {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(out.len() - written);
                out[written..written + n].copy_from_slice(&self.pending[..n]);
                self.pending = &self.pending[n..];
                written += n;
                continue;
            }
            if self.start == self.end {
                if written > 0 {
                    break;
                }
                self.fill()?;
                if self.start == self.end {
                    break;
                }
            }
            if self.in_escape {
                // The byte after a backslash: `x` becomes `u00`, anything else stays.
                self.in_escape = false;
                let byte = self.buf[self.start];
                self.start += 1;
                if byte == b'x' {
                    self.pending = b"u00";
                    self.repaired += 1;
                } else {
                    out[written] = byte;
                    written += 1;
                }
                continue;
            }
            // Copy up to and including the next backslash in one go.
            let room = out.len() - written;
            let span = &self.buf[self.start..self.end.min(self.start + room)];
            let n = match memchr::memchr(b'\\', span) {
                Some(i) => {
                    self.in_escape = true;
                    i + 1
                }
                None => span.len(),
            };
            out[written..written + n].copy_from_slice(&span[..n]);
            self.start += n;
            written += n;
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repair(input: &[u8], chunk: usize) -> (Vec<u8>, u64) {
        let mut reader = EscapeRepair::new(input);
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        (out, reader.repaired())
    }

    #[test]
    fn rewrites_x_escapes_only_when_they_start_an_escape() {
        let input = br#""a\x0Cb \\x0C \\\x01 \n x""#;
        for chunk in [1, 2, 3, 4, 7, 1024] {
            let (out, n) = repair(input, chunk);
            assert_eq!(out, br#""a\u000Cb \\x0C \\\u0001 \n x""#.to_vec());
            assert_eq!(n, 2);
        }
    }

    #[test]
    fn drops_a_leading_bom() {
        let (out, _) = repair(b"\xEF\xBB\xBF{}", 16);
        assert_eq!(out, b"{}");
    }
}
