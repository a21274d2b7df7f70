//! The log files of each container, in docker's json-file format: one JSON object per record
//! (`{"log":"hello\n","stream":"stdout","time":"2026-12-04T20:00:00.123456789Z"}`), in
//! `<root>/<container id>/container.log`, rotated to `container.log.1` (newest) up to
//! `container.log.<max-file - 1>` (oldest), each gzipped to `.gz` when `compress` is set.
//!
//! Plain `std::fs` over a root directory, so the unit tests run on the host; the component
//! roots it at `/state`. Every write is complete lines, so a reader never sees half a record
//! (a trap mid-write can leave one unterminated line, which readers skip).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The live file's name; rotated ones add `.N` and maybe `.gz`.
const LIVE: &str = "container.log";

/// Largest `max-file`: docker sets no bound, but every rotation renames each kept file.
const MAX_FILES: u32 = 100;

/// Which output a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One record, as the driver's interface carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its stream.
    pub stream: Stream,
    /// Nanoseconds since the Unix epoch.
    pub nanos: u64,
    /// The bytes, without the trailing newline.
    pub line: Vec<u8>,
    /// A fragment: the line continues in the next record.
    pub partial: bool,
}

/// One line of the file.
#[derive(Serialize, Deserialize)]
struct Line {
    log: String,
    stream: Stream,
    time: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    partial: bool,
}

/// What a user gave with `--log-opt`: `max-size`, `max-file`, `compress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Rotate before the live file would pass this many bytes (`None`: never).
    pub max_size: Option<u64>,
    /// Files kept, the live one included.
    pub max_file: u32,
    /// Gzip rotated files.
    pub compress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_size: None,
            max_file: 1,
            compress: false,
        }
    }
}

/// The option keys this driver accepts.
pub const OPTION_KEYS: &[&str] = &["max-size", "max-file", "compress"];

impl Options {
    /// Parses `--log-opt` pairs (keys already checked against [`OPTION_KEYS`]); the error
    /// names the bad value.
    pub fn parse(pairs: &[(String, String)]) -> Result<Options, String> {
        let mut options = Options::default();
        for (key, value) in pairs {
            match key.as_str() {
                "max-size" => {
                    let size = parse_size(value).ok_or_else(|| {
                        format!("max-size {value:?}: expected a size such as 10m, 512k or 1g")
                    })?;
                    // docker: -1 means unlimited.
                    options.max_size = (size > 0).then_some(size);
                }
                "max-file" => {
                    options.max_file = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_FILES).contains(n))
                        .ok_or_else(|| {
                        format!("max-file {value:?}: expected a number from 1 to {MAX_FILES}")
                    })?;
                }
                "compress" => {
                    options.compress = match value.as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("compress {value:?}: expected true or false")),
                    };
                }
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        if options.max_file > 1 && options.max_size.is_none() {
            return Err("max-file needs max-size: without a size the log never rotates".into());
        }
        if options.compress && options.max_file < 2 {
            return Err(
                "compress needs max-file of 2 or more: only rotated files are compressed".into(),
            );
        }
        Ok(options)
    }
}

/// `10m`, `512k`, `1g`, `4096`, `-1` (unlimited, returned as 0): binary units as docker's
/// `max-size`, case-insensitive, with an optional `b`/`ib`.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    if text == "-1" {
        return Some(0);
    }
    let digits = text.len() - text.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// A container's directory: ids are 64 lowercase hex digits, so no id names another path.
fn container_dir(root: &Path, id: &str) -> io::Result<PathBuf> {
    let valid = id.len() == 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !valid {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("container id {id:?} is not 64 lowercase hex digits"),
        ));
    }
    Ok(root.join(id))
}

fn rotated(dir: &Path, n: u32, gz: bool) -> PathBuf {
    dir.join(if gz {
        format!("{LIVE}.{n}.gz")
    } else {
        format!("{LIVE}.{n}")
    })
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn format_time(nanos: u64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(nanos)).to_string()
}

fn parse_time(text: &str) -> Option<u64> {
    let time = humantime::parse_rfc3339(text).ok()?;
    let since = time.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_nanos()).ok()
}

/// One record as a line of the file, newline included.
fn encode(entry: &Entry) -> Vec<u8> {
    let mut log = String::from_utf8_lossy(&entry.line).into_owned();
    if !entry.partial {
        log.push('\n');
    }
    let line = Line {
        log,
        stream: entry.stream,
        time: format_time(entry.nanos),
        partial: entry.partial,
    };
    let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// A line of the file as a record; `None` for a line that is not one.
fn decode(bytes: &[u8]) -> Option<Entry> {
    let line: Line = serde_json::from_slice(bytes).ok()?;
    let nanos = parse_time(&line.time)?;
    let mut text = line.log.into_bytes();
    let complete = text.last() == Some(&b'\n');
    if complete {
        text.pop();
    }
    Some(Entry {
        stream: line.stream,
        nanos,
        line: text,
        partial: line.partial && !complete,
    })
}

/// The open log of one container.
#[derive(Debug)]
pub struct Writer {
    dir: PathBuf,
    file: File,
    size: u64,
    options: Options,
}

fn open_live(dir: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LIVE))
}

impl Writer {
    /// Opens (appending to) the log of container `id` under `root`.
    pub fn open(root: &Path, id: &str, options: Options) -> io::Result<Writer> {
        let dir = container_dir(root, id)?;
        std::fs::create_dir_all(&dir)?;
        let file = open_live(&dir)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            dir,
            file,
            size,
            options,
        })
    }

    /// Appends `entries`, rotating whenever the next line would pass `max-size`.
    pub fn write(&mut self, entries: &[Entry]) -> io::Result<()> {
        let mut buffer = Vec::with_capacity(entries.len() * 96);
        for entry in entries {
            let line = encode(entry);
            if let Some(max) = self.options.max_size {
                let pending = buffer.len() as u64;
                if self.size + pending > 0 && self.size + pending + line.len() as u64 > max {
                    self.file.write_all(&buffer)?;
                    buffer.clear();
                    self.rotate()?;
                }
            }
            buffer.extend_from_slice(&line);
        }
        self.file.write_all(&buffer)?;
        self.size += buffer.len() as u64;
        Ok(())
    }

    /// Flushes what was written to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Shifts the rotated files up by one (dropping the oldest), makes the live file `.1`
    /// (gzipped if asked) and starts an empty live file.
    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.options.max_file;
        if keep <= 1 {
            File::create(self.dir.join(LIVE))?;
            self.file = open_live(&self.dir)?;
            self.size = 0;
            return Ok(());
        }
        for gz in [false, true] {
            remove_if_present(&rotated(&self.dir, keep - 1, gz))?;
        }
        for n in (1..keep - 1).rev() {
            for gz in [false, true] {
                let from = rotated(&self.dir, n, gz);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.dir, n + 1, gz))?;
                }
            }
        }
        let first = rotated(&self.dir, 1, false);
        std::fs::rename(self.dir.join(LIVE), &first)?;
        self.file = open_live(&self.dir)?;
        self.size = 0;
        if self.options.compress {
            gzip(&first, &rotated(&self.dir, 1, true))?;
            std::fs::remove_file(&first)?;
        }
        Ok(())
    }
}

/// Writes `from`, gzipped, to `to` (through a temporary file, so `to` is whole or absent).
fn gzip(from: &Path, to: &Path) -> io::Result<()> {
    let temp = to.with_extension("gz.tmp");
    let mut input = File::open(from)?;
    let output = File::create(&temp)?;
    let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::fast());
    io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.sync_all()?;
    std::fs::rename(&temp, to)
}

/// Removes everything stored for container `id`; `NotFound` if nothing was.
pub fn remove(root: &Path, id: &str) -> io::Result<()> {
    std::fs::remove_dir_all(container_dir(root, id)?)
}

/// Which records a [`Reader`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only records at or after this time.
    pub since: Option<u64>,
    /// Only records before this time.
    pub until: Option<u64>,
    /// Only the last this many.
    pub tail: Option<u32>,
    /// Keep reading what is written later.
    pub follow: bool,
}

impl Selection {
    fn wants(&self, entry: &Entry) -> bool {
        self.since.is_none_or(|s| entry.nanos >= s) && self.until.is_none_or(|u| entry.nanos < u)
    }
}

/// A cursor over a container's stored log, oldest record first. Reads one file at a time,
/// so a long log is never held in memory.
///
/// The live file stays open while it is read: when it is rotated (renamed) the cursor goes
/// on reading the same file to its end, and only then moves to the new live file. Calls on
/// one instance never interleave, so at the end of the open file a live path of another
/// length can only be a new file.
pub struct Reader {
    dir: PathBuf,
    selection: Selection,
    /// Rotated files still to read, oldest first.
    history: VecDeque<PathBuf>,
    open_history: Option<Box<dyn BufRead>>,
    live: Option<BufReader<File>>,
    live_opened: bool,
    /// Bytes of the open live file consumed.
    live_offset: u64,
    /// Matching records to pass over first (for `tail`).
    skip: u64,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("dir", &self.dir)
            .field("live_offset", &self.live_offset)
            .finish()
    }
}

/// The rotated files of `dir`, oldest first (`.gz` or not, whichever exists).
fn history(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(LIVE).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let gz = rest.ends_with(".gz");
        let Ok(n) = rest.strip_suffix(".gz").unwrap_or(rest).parse::<u32>() else {
            continue;
        };
        match found.iter_mut().find(|(m, _)| *m == n) {
            // While `.N` is being compressed both exist; the plain one is whole.
            Some(slot) if !gz => slot.1 = entry.path(),
            Some(_) => {}
            None => found.push((n, entry.path())),
        }
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

fn open_any(path: &Path) -> io::Result<Option<Box<dyn BufRead>>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Some(Box::new(BufReader::new(
            flate2::read::GzDecoder::new(file),
        ))))
    } else {
        Ok(Some(Box::new(BufReader::new(file))))
    }
}

impl Reader {
    /// Opens the log of container `id`; `NotFound` if there is none.
    pub fn open(root: &Path, id: &str, selection: Selection) -> io::Result<Reader> {
        let dir = container_dir(root, id)?;
        if !dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no log is stored for container {id}"),
            ));
        }
        let mut skip = 0;
        if let Some(tail) = selection.tail {
            // A first pass counts the matching records; the real one passes over all but
            // the last `tail`.
            let everything = Selection {
                tail: None,
                follow: false,
                ..selection
            };
            let mut counter = Reader::start(dir.clone(), everything, 0)?;
            let mut total = 0u64;
            loop {
                let n = counter.next(1024)?.len() as u64;
                if n == 0 {
                    break;
                }
                total += n;
            }
            skip = total.saturating_sub(u64::from(tail));
        }
        Reader::start(dir, selection, skip)
    }

    fn start(dir: PathBuf, selection: Selection, skip: u64) -> io::Result<Reader> {
        Ok(Reader {
            history: history(&dir)?.into(),
            dir,
            selection,
            open_history: None,
            live: None,
            live_opened: false,
            live_offset: 0,
            skip,
        })
    }

    /// Up to `max` further records; empty when there are none now.
    pub fn next(&mut self, max: usize) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let mut looked_for_new_live = false;
        while out.len() < max {
            let mut line = Vec::new();
            if let Some(file) = self.open_history.as_mut() {
                let n = file.read_until(b'\n', &mut line)?;
                if n == 0 || line.last() != Some(&b'\n') {
                    self.open_history = None;
                    continue;
                }
            } else if let Some(path) = self.history.pop_front() {
                self.open_history = open_any(&path)?;
                continue;
            } else {
                if !self.live_opened {
                    self.live_opened = true;
                    self.live_offset = 0;
                    self.live = match File::open(self.dir.join(LIVE)) {
                        Ok(f) => Some(BufReader::new(f)),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => return Err(e),
                    };
                }
                let n = match self.live.as_mut() {
                    Some(file) => file.read_until(b'\n', &mut line)?,
                    None => 0,
                };
                if n > 0 && line.last() == Some(&b'\n') {
                    self.live_offset += n as u64;
                } else {
                    if n > 0 {
                        // Not a whole line yet: read it again next time.
                        if let Some(file) = self.live.as_mut() {
                            file.seek(SeekFrom::Start(self.live_offset))?;
                        }
                        break;
                    }
                    if !self.selection.follow || looked_for_new_live {
                        break;
                    }
                    looked_for_new_live = true;
                    let len = match std::fs::metadata(self.dir.join(LIVE)) {
                        Ok(m) => Some(m.len()),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                        Err(e) => return Err(e),
                    };
                    let same = self.live.is_some() && len == Some(self.live_offset);
                    if len.is_some() && !same {
                        // Rotated (or created): move to the new live file.
                        self.live_opened = false;
                        continue;
                    }
                    break;
                }
            }
            let Some(entry) = decode(&line[..line.len() - 1]) else {
                continue;
            };
            if !self.selection.wants(&entry) {
                continue;
            }
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            out.push(entry);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn entry(n: u64, text: &str) -> Entry {
        Entry {
            stream: if n.is_multiple_of(2) {
                Stream::Stdout
            } else {
                Stream::Stderr
            },
            nanos: 1_700_000_000_000_000_000 + n,
            line: text.as_bytes().to_vec(),
            partial: false,
        }
    }

    fn read_all(root: &Path, selection: Selection) -> Vec<Entry> {
        let mut reader = Reader::open(root, ID, selection).unwrap();
        let mut out = Vec::new();
        loop {
            let batch = reader.next(7).unwrap();
            if batch.is_empty() {
                return out;
            }
            out.extend(batch);
        }
    }

    fn texts(entries: &[Entry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.line).into_owned())
            .collect()
    }

    #[test]
    fn writes_docker_json_file_lines_and_reads_them_back() {
        let root = tempfile::tempdir().unwrap();
        let mut writer = Writer::open(root.path(), ID, Options::default()).unwrap();
        let mut partial = entry(2, "frag");
        partial.partial = true;
        writer
            .write(&[
                entry(0, "hello"),
                entry(1, "oops \"quoted\""),
                partial,
                entry(4, "ment"),
            ])
            .unwrap();
        let text = std::fs::read_to_string(root.path().join(ID).join(LIVE)).unwrap();
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["log"], "hello\n");
        assert_eq!(first["stream"], "stdout");
        assert_eq!(first["time"], "2023-11-14T22:13:20.000000000Z");
        let back = read_all(root.path(), Selection::default());
        assert_eq!(back.len(), 4);
        assert_eq!(back[1], entry(1, "oops \"quoted\""));
        assert!(back[2].partial && !back[3].partial);
    }

    #[test]
    fn rotates_keeps_max_file_and_compresses() {
        let root = tempfile::tempdir().unwrap();
        let options = Options::parse(&[
            ("max-size".into(), "1k".into()),
            ("max-file".into(), "3".into()),
            ("compress".into(), "true".into()),
        ])
        .unwrap();
        let mut writer = Writer::open(root.path(), ID, options).unwrap();
        let all: Vec<Entry> = (0..200)
            .map(|n| entry(n, &format!("line {n:04}")))
            .collect();
        for chunk in all.chunks(9) {
            writer.write(chunk).unwrap();
        }
        let dir = root.path().join(ID);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["container.log", "container.log.1.gz", "container.log.2.gz"]
        );
        for name in &names {
            let len = std::fs::metadata(dir.join(name)).unwrap().len();
            assert!(
                name.ends_with(".gz") || len <= 1024,
                "{name} is {len} bytes"
            );
        }
        // What is kept is the newest records, in order, without gaps.
        let back = read_all(root.path(), Selection::default());
        assert!(back.len() > 9 && back.len() < 200);
        assert_eq!(back.last().unwrap(), all.last().unwrap());
        let first = (back[0].nanos - all[0].nanos) as usize;
        assert_eq!(back, all[first..]);
        // tail counts across the rotated files.
        let tail = read_all(
            root.path(),
            Selection {
                tail: Some(20),
                ..Selection::default()
            },
        );
        assert_eq!(tail, all[180..]);
    }

    #[test]
    fn max_file_one_truncates() {
        let root = tempfile::tempdir().unwrap();
        let options = Options {
            max_size: Some(300),
            ..Options::default()
        };
        let mut writer = Writer::open(root.path(), ID, options).unwrap();
        for n in 0..20 {
            writer.write(&[entry(n, "0123456789")]).unwrap();
        }
        let len = std::fs::metadata(root.path().join(ID).join(LIVE))
            .unwrap()
            .len();
        assert!(len <= 300);
        let back = read_all(root.path(), Selection::default());
        assert_eq!(back.last().unwrap(), &entry(19, "0123456789"));
    }

    #[test]
    fn since_until_and_follow_across_rotation() {
        let root = tempfile::tempdir().unwrap();
        let options = Options {
            max_size: Some(400),
            max_file: 2,
            compress: false,
        };
        let mut writer = Writer::open(root.path(), ID, options).unwrap();
        writer
            .write(&[entry(0, "a"), entry(1, "b"), entry(2, "c")])
            .unwrap();
        let window = read_all(
            root.path(),
            Selection {
                since: Some(entry(1, "").nanos),
                until: Some(entry(2, "").nanos),
                ..Selection::default()
            },
        );
        assert_eq!(texts(&window), ["b"]);
        let mut follower = Reader::open(
            root.path(),
            ID,
            Selection {
                follow: true,
                ..Selection::default()
            },
        )
        .unwrap();
        assert_eq!(texts(&follower.next(100).unwrap()), ["a", "b", "c"]);
        assert!(follower.next(100).unwrap().is_empty());
        // Enough to rotate once: what the follower had not read moves to `.1`.
        let more: Vec<Entry> = (3..8).map(|n| entry(n, &format!("more {n}"))).collect();
        writer.write(&more).unwrap();
        assert!(root.path().join(ID).join("container.log.1").exists());
        let mut got = Vec::new();
        for _ in 0..4 {
            got.extend(follower.next(100).unwrap());
        }
        assert_eq!(
            texts(&got),
            ["more 3", "more 4", "more 5", "more 6", "more 7"]
        );
    }

    #[test]
    fn bad_options_and_ids_are_refused() {
        let bad = |k: &str, v: &str| Options::parse(&[(k.into(), v.into())]).unwrap_err();
        assert!(bad("max-size", "ten").contains("max-size"));
        assert!(bad("max-file", "0").contains("max-file"));
        assert!(bad("max-file", "3").contains("needs max-size"));
        assert!(bad("compress", "yes").contains("compress"));
        assert_eq!(parse_size("10m"), Some(10 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("-1"), Some(0));
        let root = tempfile::tempdir().unwrap();
        let err = Writer::open(root.path(), "../../etc", Options::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = Reader::open(root.path(), ID, Selection::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
