//! Bounded line readers: forward (verify) and backward from the end (the
//! head at open, list). Neither holds more than [`MAX_LINE`] bytes of a line;
//! a longer line is reported as overlong, its bytes skipped.

use std::fs::File;
use std::io::{self, BufRead};
use std::os::unix::fs::FileExt;

use crate::MAX_LINE;

/// The longest line content, its newline excluded.
const MAX_CONTENT: usize = MAX_LINE - 1;
/// How much is read at a time when scanning backwards for a newline.
const CHUNK: usize = 8 * 1024;

/// A line read forward.
pub(crate) struct Line<'a> {
    /// 1-based.
    pub number: u64,
    /// `None` when the line is longer than [`MAX_LINE`].
    pub bytes: Option<&'a [u8]>,
    /// False for a last line without a newline (a write cut short).
    pub terminated: bool,
}

pub(crate) struct Forward<R> {
    reader: R,
    buf: Vec<u8>,
    number: u64,
}

impl<R: BufRead> Forward<R> {
    pub fn new(reader: R) -> Forward<R> {
        Forward {
            reader,
            buf: Vec::new(),
            number: 0,
        }
    }

    pub fn next_line(&mut self) -> io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut seen = 0usize;
        let mut overlong = false;
        let mut terminated = false;
        loop {
            let avail = match self.reader.fill_buf() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                break;
            }
            let (chunk, found) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (&avail[..i], true),
                None => (avail, false),
            };
            seen = seen.saturating_add(chunk.len());
            if !overlong {
                if self.buf.len() + chunk.len() > MAX_CONTENT {
                    overlong = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            let used = chunk.len() + usize::from(found);
            self.reader.consume(used);
            if found {
                terminated = true;
                break;
            }
        }
        if seen == 0 && !terminated {
            return Ok(None);
        }
        self.number += 1;
        Ok(Some(Line {
            number: self.number,
            bytes: (!overlong).then_some(self.buf.as_slice()),
            terminated,
        }))
    }
}

/// Complete lines of `file[..end]`, last first, read with `pread` (the
/// file's offset is not touched, so this can run beside appends).
pub(crate) struct Backward<'a> {
    file: &'a File,
    end: u64,
}

impl<'a> Backward<'a> {
    /// `end` must be 0 or just past a newline: see [`tail_start`].
    pub fn new(file: &'a File, end: u64) -> Backward<'a> {
        Backward { file, end }
    }

    /// The previous line: its offset and its bytes (without the newline),
    /// or `None` for bytes when it is longer than [`MAX_LINE`].
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Option<Vec<u8>>)>> {
        if self.end == 0 {
            return Ok(None);
        }
        let newline = self.end - 1;
        let start = line_start(self.file, newline)?;
        self.end = start;
        Ok(Some((start, read_line(self.file, start, newline)?)))
    }
}

/// Where the unterminated last line begins (the partial line a power cut
/// leaves), or `len` when the file is empty or ends with a newline.
pub(crate) fn tail_start(file: &File, len: u64) -> io::Result<u64> {
    if len == 0 {
        return Ok(0);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    if last[0] == b'\n' {
        Ok(len)
    } else {
        line_start(file, len)
    }
}

/// The bytes `file[start..end]` if they fit in a line.
pub(crate) fn read_line(file: &File, start: u64, end: u64) -> io::Result<Option<Vec<u8>>> {
    let len = end - start;
    if len > MAX_CONTENT as u64 {
        return Ok(None);
    }
    // Fits: len <= MAX_CONTENT, a usize.
    let mut bytes = vec![0u8; len as usize];
    file.read_exact_at(&mut bytes, start)?;
    Ok(Some(bytes))
}

/// Just after the last newline before `end`, or 0.
fn line_start(file: &File, end: u64) -> io::Result<u64> {
    let mut chunk = [0u8; CHUNK];
    let mut pos = end;
    while pos > 0 {
        let n = pos.min(CHUNK as u64);
        let from = pos - n;
        // n <= CHUNK, a usize.
        let buf = &mut chunk[..n as usize];
        file.read_exact_at(buf, from)?;
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            return Ok(from + i as u64 + 1);
        }
        pos = from;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Write};

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let file = File::open(f.path()).unwrap();
        (f, file)
    }

    fn forward(bytes: &[u8]) -> Vec<(u64, Option<Vec<u8>>, bool)> {
        let mut r = Forward::new(BufReader::with_capacity(16, bytes));
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push((l.number, l.bytes.map(<[u8]>::to_vec), l.terminated));
        }
        out
    }

    #[test]
    fn forward_lines_are_numbered_bounded_and_flag_a_missing_newline() {
        let long = vec![b'x'; MAX_LINE];
        let mut text = b"a\n\nbb\n".to_vec();
        text.extend_from_slice(&long);
        text.extend_from_slice(b"\ncut");
        let lines = forward(&text);
        assert_eq!(
            lines,
            vec![
                (1, Some(b"a".to_vec()), true),
                (2, Some(Vec::new()), true),
                (3, Some(b"bb".to_vec()), true),
                (4, None, true),
                (5, Some(b"cut".to_vec()), false),
            ]
        );
        // A line of exactly MAX_LINE bytes with its newline fits.
        let mut fits = vec![b'y'; MAX_LINE - 1];
        fits.push(b'\n');
        assert_eq!(
            forward(&fits)[0].1.as_ref().map(Vec::len),
            Some(MAX_LINE - 1)
        );
        assert!(forward(b"").is_empty());
    }

    #[test]
    fn backward_lines_come_last_first_across_chunks() {
        let long = vec![b'z'; CHUNK * 3];
        let mut text = b"one\n".to_vec();
        text.extend_from_slice(&long);
        text.extend_from_slice(b"\nthree\npartial");
        let (_keep, file) = file_with(&text);
        let len = text.len() as u64;
        let tail = tail_start(&file, len).unwrap();
        assert_eq!(&text[tail as usize..], b"partial");
        let mut back = Backward::new(&file, tail);
        let mut got = Vec::new();
        while let Some((start, bytes)) = back.next_line().unwrap() {
            got.push((start, bytes.map(|b| b.len())));
        }
        assert_eq!(
            got,
            vec![
                (4 + long.len() as u64 + 1, Some(5)),
                (4, Some(long.len())),
                (0, Some(3))
            ]
        );
        assert_eq!(tail_start(&file, 4).unwrap(), 4);
        assert_eq!(tail_start(&file, 0).unwrap(), 0);
    }

    #[test]
    fn backward_skips_an_overlong_line_without_reading_it() {
        let mut text = b"a\n".to_vec();
        text.extend_from_slice(&vec![b'q'; MAX_LINE * 2]);
        text.extend_from_slice(b"\n");
        let (_keep, file) = file_with(&text);
        let mut back = Backward::new(&file, text.len() as u64);
        assert_eq!(back.next_line().unwrap(), Some((2, None)));
        assert_eq!(back.next_line().unwrap(), Some((0, Some(b"a".to_vec()))));
        assert_eq!(back.next_line().unwrap(), None);
    }
}
