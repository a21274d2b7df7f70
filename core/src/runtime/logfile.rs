//! The container's local log, in one of two line formats (berthd's `local-log-format`):
//! docker's json-file (`{"log":"hello\n","stream":"stdout","time":"...Z"}`, the default) or
//! the CRI format containerd and CRI-O write for Kubernetes (`2026-12-04T20:00:00.1Z stdout F
//! hello`), both with nanosecond timestamps. Lines longer than 16 KiB are split into records
//! marked partial (`"partial":true`, or the `P` tag). Readers take either format, line by
//! line, so a daemon may change it without breaking older logs.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest record before a line is split.
const MAX_RECORD: usize = 16 * 1024;

/// Which stream a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The text, with its trailing newline when the line was complete.
    pub log: String,
    /// Stream.
    pub stream: Stream,
    /// RFC 3339 time with nanoseconds.
    pub time: String,
    /// Set on all but the last piece of a split line.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// How records are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// docker's json-file lines.
    #[default]
    JsonFile,
    /// CRI lines: `TIME STREAM P|F TEXT`.
    Cri,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<LogFormat, String> {
        match s {
            "json-file" => Ok(LogFormat::JsonFile),
            "cri" => Ok(LogFormat::Cri),
            other => Err(format!("{other:?}: use json-file or cri")),
        }
    }
}

/// One record as a line of the file, newline included.
fn encode(
    format: LogFormat,
    stream: Stream,
    bytes: &[u8],
    partial: bool,
) -> std::io::Result<Vec<u8>> {
    let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
    let mut line = match format {
        LogFormat::JsonFile => {
            let record = Record {
                log: String::from_utf8_lossy(bytes).into_owned(),
                stream,
                time,
                partial,
            };
            serde_json::to_vec(&record).map_err(std::io::Error::other)?
        }
        LogFormat::Cri => {
            let stream = match stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            // The text goes without its newline: the tag says whether the line ended.
            let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
            let tag = if partial || !bytes.ends_with(b"\n") {
                "P"
            } else {
                "F"
            };
            let mut line = format!("{time} {stream} {tag} ").into_bytes();
            line.extend_from_slice(text);
            line
        }
    };
    line.push(b'\n');
    Ok(line)
}

/// A line of a local log (without its newline) in either format; `None` if it is neither.
pub fn parse_line(line: &[u8]) -> Option<Record> {
    if line.first() == Some(&b'{') {
        return serde_json::from_slice(line).ok();
    }
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match fields.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let mut log = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    if !partial {
        log.push('\n');
    }
    Some(Record {
        log,
        stream,
        time: time.to_owned(),
        partial,
    })
}

/// Appends records, buffering incomplete lines per stream.
#[derive(Debug)]
pub struct LogWriter {
    file: File,
    path: PathBuf,
    written: u64,
    max_bytes: u64,
    max_files: u32,
    format: LogFormat,
    pending: [Vec<u8>; 2],
}

/// The `n`th rotated file of the log at `path` (`container.log.1` is the newest).
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
}

impl LogWriter {
    /// Opens (appending to) the log at `path`; past `max_bytes` (0: never) it rotates to
    /// `<path>.1`, keeping `max_files` files in all (the oldest go).
    pub fn open(
        path: &Path,
        max_bytes: u64,
        max_files: u32,
        format: LogFormat,
    ) -> std::io::Result<LogWriter> {
        let file = open(path)?;
        let written = file.metadata()?.len();
        Ok(LogWriter {
            file,
            path: path.to_owned(),
            written,
            max_bytes,
            max_files: max_files.max(1),
            format,
            pending: [Vec::new(), Vec::new()],
        })
    }

    fn emit(&mut self, stream: Stream, bytes: &[u8], partial: bool) -> std::io::Result<()> {
        let line = encode(self.format, stream, bytes, partial)?;
        if self.max_bytes > 0 && self.written + line.len() as u64 > self.max_bytes {
            self.rotate()?;
            self.written = 0;
        }
        self.file.write_all(&line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if self.max_files <= 1 {
            File::create(&self.path)?;
        } else {
            for n in (1..self.max_files - 1).rev() {
                match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.file = open(&self.path)?;
        Ok(())
    }

    /// Adds bytes read from a stream; complete lines are written at once.
    pub fn push(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let idx = stream as usize;
        let mut buf = std::mem::take(&mut self.pending[idx]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + nl + 1;
            let mut piece = start;
            while end - piece > MAX_RECORD {
                self.emit(stream, &buf[piece..piece + MAX_RECORD], true)?;
                piece += MAX_RECORD;
            }
            self.emit(stream, &buf[piece..end], false)?;
            start = end;
        }
        while buf.len() - start >= MAX_RECORD {
            self.emit(stream, &buf[start..start + MAX_RECORD], true)?;
            start += MAX_RECORD;
        }
        buf.drain(..start);
        self.pending[idx] = buf;
        Ok(())
    }

    /// Writes what is left of unfinished lines (at exit).
    pub fn flush_pending(&mut self) -> std::io::Result<()> {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let rest = std::mem::take(&mut self.pending[stream as usize]);
            if !rest.is_empty() {
                self.emit(stream, &rest, false)?;
            }
        }
        Ok(())
    }
}

/// Most rotated files a log keeps (`local-log-max-files` is at most this).
const MAX_FILES: u32 = 100;

/// Reads every record of a log file (the rotated ones first, oldest first). Malformed lines
/// are skipped.
pub fn read_all(path: &Path) -> std::io::Result<Vec<Record>> {
    let mut out = Vec::new();
    let files = (1..MAX_FILES)
        .rev()
        .map(|n| rotated(path, n))
        .chain([path.to_owned()]);
    for p in files {
        match std::fs::read_to_string(&p) {
            Ok(text) => out.extend(text.lines().filter_map(|l| parse_line(l.as_bytes()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_partials_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 0, 1, LogFormat::JsonFile).unwrap();
        w.push(Stream::Stdout, b"hel").unwrap();
        w.push(Stream::Stderr, b"oops\n").unwrap();
        w.push(Stream::Stdout, b"lo\nwor").unwrap();
        w.flush_pending().unwrap();
        let records = read_all(&path).unwrap();
        let got: Vec<(Stream, &str)> = records.iter().map(|r| (r.stream, r.log.as_str())).collect();
        assert_eq!(
            got,
            [
                (Stream::Stderr, "oops\n"),
                (Stream::Stdout, "hello\n"),
                (Stream::Stdout, "wor")
            ]
        );
        let big = vec![b'x'; MAX_RECORD * 2 + 10];
        w.push(Stream::Stdout, &big).unwrap();
        w.push(Stream::Stdout, b"\n").unwrap();
        let records = read_all(&path).unwrap();
        assert_eq!(records.iter().filter(|r| r.partial).count(), 2);
        assert_eq!(records.last().unwrap().log.len(), 11);
        let mut small =
            LogWriter::open(&dir.path().join("r.log"), 200, 2, LogFormat::JsonFile).unwrap();
        for _ in 0..5 {
            small
                .push(
                    Stream::Stdout,
                    b"0123456789012345678901234567890123456789\n",
                )
                .unwrap();
        }
        assert!(dir.path().join("r.log.1").exists());
        // Only one rotated file is kept: the oldest lines are gone, the newest are there.
        let kept = read_all(&dir.path().join("r.log")).unwrap();
        assert!(kept.len() < 5 && !kept.is_empty());
    }

    #[test]
    fn cri_lines_are_written_and_read_like_json_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = LogWriter::open(&path, 0, 1, LogFormat::Cri).unwrap();
        w.push(Stream::Stdout, b"hello world\n").unwrap();
        w.push(Stream::Stderr, b"oops").unwrap();
        w.flush_pending().unwrap();
        let big = vec![b'y'; MAX_RECORD + 5];
        w.push(Stream::Stdout, &big).unwrap();
        w.push(Stream::Stdout, b"\n").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        let fields: Vec<&str> = first.splitn(4, ' ').collect();
        assert!(fields[0].ends_with('Z') && fields[0].len() == 30, "{first}");
        assert_eq!(&fields[1..], ["stdout", "F", "hello world"]);
        let records = read_all(&path).unwrap();
        let got: Vec<(Stream, &str, bool)> = records
            .iter()
            .map(|r| (r.stream, r.log.as_str(), r.partial))
            .take(2)
            .collect();
        assert_eq!(
            got,
            [
                (Stream::Stdout, "hello world\n", false),
                (Stream::Stderr, "oops", true)
            ]
        );
        // The long line: a P piece, then the F rest.
        assert!(records[2].partial && !records[3].partial);
        assert_eq!(records[2].log.len() + records[3].log.len(), MAX_RECORD + 6);
        assert!(parse_line(b"not a log line").is_none());
        assert!(parse_line(b"2026-12-04T20:00:00Z stdin F x").is_none());
        assert_eq!("cri".parse::<LogFormat>(), Ok(LogFormat::Cri));
        assert!("text".parse::<LogFormat>().is_err());
    }
}
