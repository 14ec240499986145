//! Storage of a job's trace: the bytes GitLab will receive, in an anonymous temp file behind a
//! small write buffer, with the `output_limit` cut-off and a running CRC32. Memory use is bounded
//! whatever the job prints. The file is made when the buffer first spills: most jobs print less
//! than the buffer holds and never make one (making a temp file costs the file system an inode,
//! 5 % of the manager's CPU at 50 jobs a second). Knows nothing of streams, masking or
//! timestamps.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes gathered in memory before they go to the file. The buffer starts empty and grows to
/// this only for a job that prints that much between two flushes: a job printing little holds
/// little (reserving it up front cost every running job 64 KiB of heap).
const WRITE_BUF: usize = 64 * 1024;

/// The trace's stored bytes. Owned by `JobTrace` behind a mutex.
pub(crate) struct TraceBuffer {
    /// The spill file, once the buffer first spilled.
    file: Option<File>,
    /// Where the spill file is made (`None`: the system's temp directory).
    dir: Option<PathBuf>,
    /// Stored bytes not yet in the file; they follow the first `flushed` bytes.
    pending: Vec<u8>,
    flushed: u64,
    len: u64,
    /// `output_limit` in bytes; 0 means no limit.
    limit: u64,
    crc: crc32fast::Hasher,
    /// The limit notice is written; everything else is dropped.
    full: bool,
    /// `finish` was called; everything is dropped.
    finished: bool,
    /// Writing the file failed once; everything after is dropped (logged once).
    broken: bool,
}

impl TraceBuffer {
    /// An empty trace in a new anonymous temp file (removed when dropped).
    #[cfg(test)]
    pub(crate) fn new(limit_bytes: usize) -> io::Result<TraceBuffer> {
        TraceBuffer::new_in(limit_bytes, None)
    }

    /// An empty trace whose anonymous temp file (removed when dropped), once needed, is made in
    /// `dir` or else the system's temp directory. A `dir` that is not a directory is an error now
    /// rather than at the first spill.
    pub(crate) fn new_in(limit_bytes: usize, dir: Option<&Path>) -> io::Result<TraceBuffer> {
        if let Some(dir) = dir {
            if !std::fs::metadata(dir)?.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", dir.display()),
                ));
            }
        }
        Ok(TraceBuffer {
            file: None,
            dir: dir.map(Path::to_path_buf),
            pending: Vec::new(),
            flushed: 0,
            len: 0,
            limit: u64::try_from(limit_bytes).unwrap_or(u64::MAX),
            crc: crc32fast::Hasher::new(),
            full: false,
            finished: false,
            broken: false,
        })
    }

    /// Stored length.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Drops every later write.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }

    /// Appends `bytes` (whole UTF-8 characters), applying the limit. Returns the new length.
    pub(crate) fn append(&mut self, bytes: &[u8]) -> u64 {
        if bytes.is_empty() || self.full || self.finished || self.broken {
            return self.len;
        }
        if self.limit == 0 {
            self.store(bytes);
            return self.len;
        }
        let capacity = self.limit.saturating_sub(self.len);
        if (bytes.len() as u64) < capacity {
            self.store(bytes);
            return self.len;
        }
        // Like GitLab Runner: reaching the limit stores what fits (whole characters only) and
        // the notice, once.
        let mut cut = usize::try_from(capacity).unwrap_or(bytes.len());
        for _ in 0..4 {
            if cut == 0 || cut >= bytes.len() || !is_continuation(bytes[cut]) {
                break;
            }
            cut -= 1;
        }
        self.store(&bytes[..cut]);
        let notice = format!(
            "\n\x1b[33;1mJob's log exceeded limit of {} bytes.\n\
             Job execution will continue but no more output will be collected.\x1b[0;m\n",
            self.limit
        );
        self.store(notice.as_bytes());
        self.full = true;
        self.len
    }

    fn store(&mut self, bytes: &[u8]) {
        if self.broken {
            return;
        }
        if self.pending.len() + bytes.len() > WRITE_BUF {
            if let Err(err) = self.flush_pending() {
                self.fail(&err);
                return;
            }
        }
        if bytes.len() > WRITE_BUF {
            if let Err(err) = write_spill(&mut self.file, self.dir.as_deref(), bytes) {
                self.fail(&err);
                return;
            }
            self.flushed += bytes.len() as u64;
        } else {
            let needed = self.pending.len() + bytes.len();
            if needed > self.pending.capacity() {
                // Doubling, but never past WRITE_BUF (a flush comes first).
                let target = needed.max(self.pending.capacity() * 2).min(WRITE_BUF);
                self.pending.reserve_exact(target - self.pending.len());
            }
            self.pending.extend_from_slice(bytes);
        }
        self.crc.update(bytes);
        self.len += bytes.len() as u64;
    }

    fn flush_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        write_spill(&mut self.file, self.dir.as_deref(), &self.pending)?;
        self.flushed += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    fn fail(&mut self, err: &io::Error) {
        self.broken = true;
        tracing::warn!(error = %err, stored = self.len, "job trace file write failed; further output is dropped");
    }

    /// Up to `max` stored bytes from `offset` (fewer at the end).
    pub(crate) fn read_at(&self, offset: u64, max: usize) -> io::Result<Vec<u8>> {
        let end = self.len.min(offset.saturating_add(max as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let want = usize::try_from(end - offset).unwrap_or(max);
        let mut out = vec![0u8; want];
        let from_file = if offset < self.flushed {
            let n = usize::try_from((self.flushed - offset).min(want as u64)).unwrap_or(want);
            let file = self
                .file
                .as_ref()
                .ok_or_else(|| io::Error::other("trace bytes flushed without a spill file"))?;
            file.read_exact_at(&mut out[..n], offset)?;
            n
        } else {
            0
        };
        if from_file < want {
            let start = usize::try_from(offset + from_file as u64 - self.flushed).unwrap_or(0);
            let rest = want - from_file;
            out[from_file..].copy_from_slice(&self.pending[start..start + rest]);
        }
        Ok(out)
    }

    /// `crc32:%08x` of every stored byte, and their count.
    pub(crate) fn checksum(&self) -> (String, u64) {
        (
            format!("crc32:{:08x}", self.crc.clone().finalize()),
            self.len,
        )
    }

    /// The in-memory write buffer's capacity (tests check memory stays bounded).
    #[cfg(test)]
    pub(crate) fn memory_capacity(&self) -> usize {
        self.pending.capacity()
    }
}

/// Appends `bytes` to the spill `file`, made in `dir` (else the system's temp directory) on
/// first use.
fn write_spill(file: &mut Option<File>, dir: Option<&Path>, bytes: &[u8]) -> io::Result<()> {
    let file = match file {
        Some(file) => file,
        None => file.insert(match dir {
            Some(dir) => tempfile::tempfile_in(dir)?,
            None => tempfile::tempfile()?,
        }),
    };
    file.write_all(bytes)
}

fn is_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(limit: usize) -> String {
        format!(
            "\n\x1b[33;1mJob's log exceeded limit of {limit} bytes.\nJob execution will continue but no more output will be collected.\x1b[0;m\n"
        )
    }

    fn all(b: &TraceBuffer) -> Vec<u8> {
        b.read_at(0, usize::MAX).expect("read")
    }

    #[test]
    fn limit_truncates_at_char_boundary_and_notice_once() {
        let cases: &[(usize, &[&str], &str)] = &[
            (10, &["12345", "67890", "abc"], "1234567890"),
            (10, &["1234567890"], "1234567890"),
            (10, &["123456789", "é"], "123456789"),
            (10, &["12345678é", "x"], "12345678é"),
            (10, &["123456789", "more"], "123456789m"),
            (4, &["€€"], "€"),
        ];
        for (limit, writes, kept) in cases {
            let mut b = TraceBuffer::new(*limit).expect("buffer");
            for w in *writes {
                b.append(w.as_bytes());
            }
            b.append(b"dropped");
            let got = String::from_utf8(all(&b)).expect("utf8");
            let want = format!("{kept}{}", notice(*limit));
            assert_eq!(got, want, "limit {limit} writes {writes:?}");
            let (sum, size) = b.checksum();
            assert_eq!(size, got.len() as u64);
            assert_eq!(
                sum,
                format!("crc32:{:08x}", crc32fast::hash(got.as_bytes()))
            );
        }
    }

    #[test]
    fn read_at_ranges_span_file_and_memory() {
        let mut b = TraceBuffer::new(0).expect("buffer");
        let mut expect = Vec::new();
        for i in 0..20_000u32 {
            let line = format!("line {i}\n");
            b.append(line.as_bytes());
            expect.extend_from_slice(line.as_bytes());
        }
        b.append(&vec![b'z'; WRITE_BUF + 7]);
        expect.extend(std::iter::repeat_n(b'z', WRITE_BUF + 7));
        b.append(b"tail");
        expect.extend_from_slice(b"tail");
        assert!(b.flushed > 0 && !b.pending.is_empty());
        let len = expect.len() as u64;
        assert_eq!(b.len(), len);
        let ranges = [
            (0, 10),
            (5, 1 << 20),
            (b.flushed - 3, 10),
            (b.flushed, 4),
            (len - 2, 100),
            (len, 5),
            (len + 10, 5),
            (0, 0),
        ];
        for (off, max) in ranges {
            let s = usize::try_from(off.min(len)).expect("fits");
            let e = (s + max).min(expect.len());
            assert_eq!(
                b.read_at(off, max).expect("read"),
                &expect[s..e],
                "{off} {max}"
            );
        }
    }

    #[test]
    fn finish_drops_later_writes() {
        let mut b = TraceBuffer::new(0).expect("buffer");
        b.append(b"kept");
        b.finish();
        b.append(b"dropped");
        assert_eq!(all(&b), b"kept");
    }

    #[test]
    fn the_spill_file_is_made_only_when_the_buffer_spills_and_a_bad_dir_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = TraceBuffer::new_in(0, Some(dir.path())).unwrap();
        b.append(&[b'a'; 1000]);
        assert!(b.file.is_none(), "a small trace made a file");
        let big = vec![b'b'; WRITE_BUF];
        b.append(&big);
        assert!(b.file.is_some(), "a spilled trace has no file");
        let mut expected = vec![b'a'; 1000];
        expected.extend_from_slice(&big);
        assert_eq!(all(&b), expected);

        let missing = dir.path().join("no-such-directory");
        let err = TraceBuffer::new_in(0, Some(&missing)).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let not_dir = dir.path().join("file");
        std::fs::write(&not_dir, b"x").unwrap();
        let err = TraceBuffer::new_in(0, Some(&not_dir)).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::NotADirectory, "{err}");
    }
}
