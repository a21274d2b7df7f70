//! Delivery of container logs to logging drivers. The shim always writes the container's
//! local log; for a container whose `--log-driver` is a plugin, berthd tails that file (one
//! reader thread per container) into a bounded buffer, and one task per container sends the
//! buffer to the driver in batches. A slow or failing driver therefore never blocks the
//! container: in `non-blocking` mode the buffer drops its oldest records when full (counted),
//! in `blocking` mode (the default) the reader waits and the local log holds the rest. How
//! far delivery got is kept in `log-cursor.json` beside the log, so delivery resumes where it
//! stopped after a daemon restart.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use berth_api::ErrorKind;
use berth_api::container::{CreateRequest, LogDelivery, LogLine, LogsRequest};
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::container::{ContainerRecord, LogHooks};
use crate::plugin::Plugins;
use crate::plugin_host::{self, LogContainer, LogEntry, LoggingDriver, ReadRequest, StreamId};
use crate::runtime::logfile;

/// The driver that is only the local log.
pub const LOCAL_DRIVER: &str = "local";

/// Buffer per container unless `max-buffer-size` says otherwise (docker's default).
const DEFAULT_MAX_BUFFER: usize = 1 << 20;
/// Largest `max-buffer-size`.
const MAX_MAX_BUFFER: usize = 1 << 30;
/// A batch: at most this many records and bytes (the WIT's limits).
const BATCH_RECORDS: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;
/// How often an idle reader looks at the local log again.
const POLL: Duration = Duration::from_millis(20);
/// Where delivery got to, beside the local log.
const CURSOR_FILE: &str = "log-cursor.json";
/// How often the cursor is written while records flow.
const CURSOR_EVERY: Duration = Duration::from_secs(1);
/// How long an unavailable driver is retried once the container has stopped.
const RETRY_AFTER_EXIT: Duration = Duration::from_secs(10);
/// Bytes a buffered record counts for beyond its text.
const RECORD_OVERHEAD: usize = 64;

/// Log delivery failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad `--log-driver` or `--log-opt`.
    #[error("{0}")]
    Invalid(String),
    /// The driver is not installed, not running, or failed.
    #[error(transparent)]
    Plugin(#[from] crate::plugin::Error),
    /// The driver's call failed.
    #[error(transparent)]
    Driver(#[from] plugin_host::Error),
}

impl Error {
    /// How the API reports this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid(_) => ErrorKind::InvalidArgument,
            Error::Plugin(e) => e.kind(),
            Error::Driver(e) => e.kind(),
        }
    }
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// A container's logging settings, from its `--log-driver` and `--log-opt`s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// The driver plugin, or [`LOCAL_DRIVER`].
    pub driver: String,
    /// Wait for room in the buffer rather than drop.
    pub blocking: bool,
    /// Bytes the buffer holds.
    pub max_buffer: usize,
    /// The options for the driver (berthd's own removed).
    pub driver_options: Vec<(String, String)>,
}

/// `10m`, `512k`, `1g`, `4096`: binary units, as docker's `max-buffer-size`.
fn parse_size(text: &str) -> Option<usize> {
    let lower = text.trim().to_ascii_lowercase();
    let digits = lower.len() - lower.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, unit) = lower.split_at(digits);
    let number: usize = number.parse().ok()?;
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return None,
    };
    number.checked_mul(1usize << shift)
}

/// The settings of a container made from `config` (its driver already defaulted).
pub fn settings(config: &CreateRequest) -> Result<LogSettings> {
    let driver = config
        .log_driver
        .clone()
        .unwrap_or_else(|| LOCAL_DRIVER.to_owned());
    let mut settings = LogSettings {
        driver,
        blocking: true,
        max_buffer: DEFAULT_MAX_BUFFER,
        driver_options: Vec::new(),
    };
    for (key, value) in &config.log_opts {
        match key.as_str() {
            "mode" => {
                settings.blocking = match value.as_str() {
                    "blocking" => true,
                    "non-blocking" => false,
                    _ => {
                        return Err(Error::Invalid(format!(
                            "log option mode={value:?}: use blocking or non-blocking"
                        )));
                    }
                }
            }
            "max-buffer-size" => {
                settings.max_buffer = parse_size(value)
                    .filter(|n| (1024..=MAX_MAX_BUFFER).contains(n))
                    .ok_or_else(|| {
                        Error::Invalid(format!(
                            "log option max-buffer-size={value:?}: a size from 1k to 1g, such as 4m"
                        ))
                    })?;
            }
            _ => settings.driver_options.push((key.clone(), value.clone())),
        }
    }
    if settings.driver == LOCAL_DRIVER && !settings.driver_options.is_empty() {
        let keys: Vec<&str> = settings
            .driver_options
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        return Err(Error::Invalid(format!(
            "the local logging driver takes no options (got {}): its rotation is berthd's local-log-max-size and local-log-max-files",
            keys.join(", ")
        )));
    }
    if !settings.blocking && settings.driver == LOCAL_DRIVER {
        return Err(Error::Invalid(
            "log option mode=non-blocking needs a logging driver other than local".into(),
        ));
    }
    Ok(settings)
}

/// How far delivery got: a position in one file of the local log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    inode: u64,
    offset: u64,
}

/// A record waiting for the driver.
#[derive(Debug)]
struct Pending {
    seq: u64,
    entry: LogEntry,
    cursor: Cursor,
}

impl Pending {
    fn size(&self) -> usize {
        self.entry.line.len() + RECORD_OVERHEAD
    }
}

#[derive(Debug, Default)]
struct Buffer {
    entries: VecDeque<Pending>,
    bytes: usize,
    next_seq: u64,
    /// The reader has read everything the container will write.
    reader_done: bool,
}

/// The delivery of one container's run.
#[derive(Debug)]
struct Shipment {
    settings: LogSettings,
    buffer: Mutex<Buffer>,
    room: Condvar,
    data: tokio::sync::Notify,
    exited: AtomicBool,
    cancelled: AtomicBool,
    /// berthd is stopping: save the cursor and leave the stream open.
    stopping: AtomicBool,
    finished: Mutex<bool>,
    finished_signal: Condvar,
    delivered: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Shipment {
    fn new(settings: LogSettings) -> Shipment {
        Shipment {
            settings,
            buffer: Mutex::default(),
            room: Condvar::new(),
            data: tokio::sync::Notify::new(),
            exited: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            finished: Mutex::new(false),
            finished_signal: Condvar::new(),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    fn buffer(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn note_error(&self, message: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
    }

    /// Adds what the reader read: waits for room in blocking mode, drops the oldest in
    /// non-blocking mode.
    fn push(&self, records: Vec<(LogEntry, Cursor)>) {
        let max = self.settings.max_buffer;
        let mut buffer = self.buffer();
        for (entry, cursor) in records {
            let pending = Pending {
                seq: buffer.next_seq,
                entry,
                cursor,
            };
            let size = pending.size();
            if self.settings.blocking {
                while buffer.bytes + size > max && !buffer.entries.is_empty() && !self.cancelled() {
                    self.data.notify_one();
                    buffer = self
                        .room
                        .wait_timeout(buffer, Duration::from_millis(100))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            } else {
                while buffer.bytes + size > max {
                    let Some(old) = buffer.entries.pop_front() else {
                        break;
                    };
                    buffer.bytes -= old.size();
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::log_records(&self.settings.driver, 0, 1);
                }
            }
            buffer.next_seq += 1;
            buffer.bytes += size;
            buffer.entries.push_back(pending);
        }
        drop(buffer);
        self.data.notify_one();
    }

    /// The next batch (copies: it stays buffered until delivered), the sequence number of
    /// its last record, and whether the reader is done.
    fn peek_batch(&self) -> (Vec<LogEntry>, Option<(u64, Cursor)>, bool) {
        let buffer = self.buffer();
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut last = None;
        for pending in &buffer.entries {
            if batch.len() >= BATCH_RECORDS
                || (!batch.is_empty() && bytes + pending.entry.line.len() > BATCH_BYTES)
            {
                break;
            }
            bytes += pending.entry.line.len();
            batch.push(pending.entry.clone());
            last = Some((pending.seq, pending.cursor));
        }
        (batch, last, buffer.reader_done)
    }

    /// Forgets the records up to `seq` (those the reader has not dropped meanwhile).
    fn pop_through(&self, seq: u64) {
        let mut buffer = self.buffer();
        while buffer.entries.front().is_some_and(|p| p.seq <= seq) {
            if let Some(p) = buffer.entries.pop_front() {
                buffer.bytes -= p.size();
            }
        }
        drop(buffer);
        self.room.notify_all();
    }

    fn finish(&self) {
        *self.finished.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.finished_signal.notify_all();
    }

    fn is_finished(&self) -> bool {
        *self.finished.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits up to `limit` for the sender to close the stream.
    fn wait_finished(&self, limit: Duration) -> bool {
        let guard = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .finished_signal
            .wait_timeout_while(guard, limit, |finished| !*finished)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }

    fn status(&self) -> LogDelivery {
        LogDelivery {
            driver: self.settings.driver.clone(),
            mode: if self.settings.blocking {
                "blocking"
            } else {
                "non-blocking"
            }
            .to_owned(),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            buffered_bytes: self.buffer().bytes as u64,
            active: !self.is_finished(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// Reads the local log from a cursor on, following it across rotations.
struct Tail {
    path: PathBuf,
    file: Option<BufReader<File>>,
    at: Cursor,
}

fn inode_of(path: &Path) -> std::io::Result<Option<u64>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(m.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A local log line as a record for the driver.
fn to_entry(line: &[u8]) -> Option<LogEntry> {
    let record = logfile::parse_line(line)?;
    let time = humantime::parse_rfc3339_weak(&record.time).ok()?;
    let nanos = crate::events::unix_nanos(time);
    let mut text = record.log.into_bytes();
    if text.last() == Some(&b'\n') {
        text.pop();
    }
    Some(LogEntry {
        stderr: record.stream == logfile::Stream::Stderr,
        nanos: u64::try_from(nanos).ok()?,
        line: text,
        partial: record.partial,
    })
}

impl Tail {
    fn new(path: PathBuf, start: Option<Cursor>) -> Tail {
        let mut tail = Tail {
            path,
            file: None,
            at: Cursor::default(),
        };
        if let Some(cursor) = start
            && let Some(file) = tail.find(cursor.inode)
        {
            let mut reader = BufReader::new(file);
            if reader.seek(SeekFrom::Start(cursor.offset)).is_ok() {
                tail.file = Some(reader);
                tail.at = cursor;
            }
        }
        tail
    }

    /// The file of the log (live or rotated) with this inode.
    fn find(&self, inode: u64) -> Option<File> {
        (0..100).find_map(|n| {
            let path = if n == 0 {
                self.path.clone()
            } else {
                logfile::rotated(&self.path, n)
            };
            let file = File::open(&path).ok()?;
            (file.metadata().ok()?.ino() == inode).then_some(file)
        })
    }

    /// The file after the one being read: the next newer rotated file, or the live one.
    fn open_next(&mut self) -> std::io::Result<bool> {
        let held = self.file.as_ref().map(|_| self.at.inode);
        let mut next = self.path.clone();
        if let Some(inode) = held {
            for n in 1..100 {
                let rotated = logfile::rotated(&self.path, n);
                match inode_of(&rotated)? {
                    Some(i) if i == inode => {
                        if n > 1 {
                            next = logfile::rotated(&self.path, n - 1);
                        }
                        break;
                    }
                    Some(_) => {}
                    None => break,
                }
            }
        }
        match File::open(&next) {
            Ok(file) => {
                let inode = file.metadata()?.ino();
                self.file = Some(BufReader::new(file));
                self.at = Cursor { inode, offset: 0 };
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The complete records written since the last call, up to about `max_bytes`.
    fn read(&mut self, max_bytes: usize) -> std::io::Result<Vec<(LogEntry, Cursor)>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut moved = false;
        while bytes < max_bytes {
            if self.file.is_none() && !self.open_next()? {
                break;
            }
            let Some(file) = self.file.as_mut() else {
                break;
            };
            let mut line = Vec::new();
            let n = file.read_until(b'\n', &mut line)?;
            if n > 0 && line.last() == Some(&b'\n') {
                self.at.offset += n as u64;
                if let Some(entry) = to_entry(&line[..n - 1]) {
                    bytes += entry.line.len() + RECORD_OVERHEAD;
                    out.push((entry, self.at));
                }
                continue;
            }
            if n > 0 {
                // A line still being written: read it again next time.
                file.seek(SeekFrom::Start(self.at.offset))?;
                break;
            }
            // The end of this file. Once the shim rotated it, nothing more comes here.
            if moved || inode_of(&self.path)? == Some(self.at.inode) {
                break;
            }
            moved = true;
            if !self.open_next()? {
                self.file = None;
                break;
            }
        }
        Ok(out)
    }
}

fn read_loop(shipment: Arc<Shipment>, mut tail: Tail) {
    loop {
        if shipment.cancelled() || shipment.stopping.load(Ordering::SeqCst) {
            break;
        }
        // Read `exited` before reading: everything the container wrote is in the file by
        // the time its exit is recorded.
        let exited = shipment.exited.load(Ordering::SeqCst);
        match tail.read(BATCH_BYTES) {
            Ok(records) if !records.is_empty() => shipment.push(records),
            Ok(_) if exited => break,
            Ok(_) => std::thread::sleep(POLL),
            Err(e) => {
                shipment.note_error(format!("read the local log: {e}"));
                if exited {
                    break;
                }
                std::thread::sleep(POLL * 10);
            }
        }
    }
    shipment.buffer().reader_done = true;
    shipment.data.notify_one();
}

/// `log-cursor.json`: how far delivery got, and whether it is done: the container's last
/// line went out and its stream was closed. A delivery cut short by berthd stopping is not
/// done, and the next berthd finishes it even if the container has exited meanwhile.
#[derive(Debug, Serialize, Deserialize)]
struct SavedCursor {
    #[serde(flatten)]
    at: Cursor,
    #[serde(default)]
    done: bool,
}

fn save_cursor(path: &Path, cursor: Cursor, done: bool) {
    let saved = SavedCursor { at: cursor, done };
    if let Ok(bytes) = serde_json::to_vec(&saved)
        && let Err(e) = crate::runtime::shim::write_atomic(path, &bytes)
    {
        debug!("cannot save the log cursor {}: {e}", path.display());
    }
}

fn load_saved(path: &Path) -> Option<SavedCursor> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn load_cursor(path: &Path) -> Option<Cursor> {
    load_saved(path).map(|s| s.at)
}

/// Whether an error is the driver saying "try again later" (retried), rather than a
/// refusal or a failure (the batch is dropped).
fn retryable(error: &plugin_host::Error) -> bool {
    matches!(
        error,
        plugin_host::Error::Plugin {
            kind: ErrorKind::Unavailable,
            ..
        }
    )
}

/// Sends the buffer to the driver until the reader is done and the buffer empty.
async fn send_loop(
    shipment: Arc<Shipment>,
    plugins: Arc<Plugins>,
    mut driver: Arc<LoggingDriver>,
    mut stream: StreamId,
    container: LogContainer,
    cursor_path: PathBuf,
) {
    let mut saved_at = Instant::now();
    let mut unsaved: Option<Cursor> = None;
    let mut backoff = Duration::from_millis(50);
    let mut give_up_at: Option<Instant> = None;
    loop {
        if shipment.cancelled() || shipment.stopping.load(Ordering::SeqCst) {
            break;
        }
        let (batch, last, reader_done) = shipment.peek_batch();
        let Some((last_seq, last_cursor)) = last else {
            if reader_done {
                break;
            }
            let _ =
                tokio::time::timeout(Duration::from_millis(200), shipment.data.notified()).await;
            continue;
        };
        // `plugin set` or a re-enable makes a new driver: the stream moves to it.
        if let Ok(current) = plugins.logging_driver(&shipment.settings.driver).await
            && !Arc::ptr_eq(&current, &driver)
        {
            match current
                .open(&container, shipment.settings.driver_options.clone())
                .await
            {
                Ok(reopened) => {
                    driver = current;
                    stream = reopened;
                }
                Err(e) => shipment.note_error(e.to_string()),
            }
        }
        match driver.write(stream, &batch).await {
            Ok(()) => {
                shipment
                    .delivered
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                crate::metrics::log_records(&shipment.settings.driver, batch.len() as u64, 0);
                backoff = Duration::from_millis(50);
                give_up_at = None;
            }
            Err(e) if retryable(&e) => {
                shipment.note_error(e.to_string());
                let deadline = if reader_done {
                    *give_up_at.get_or_insert_with(|| Instant::now() + RETRY_AFTER_EXIT)
                } else {
                    Instant::now() + backoff
                };
                if Instant::now() < deadline {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
                shipment
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                crate::metrics::log_records(&shipment.settings.driver, 0, batch.len() as u64);
            }
            Err(e) => {
                shipment.note_error(e.to_string());
                shipment
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                crate::metrics::log_records(&shipment.settings.driver, 0, batch.len() as u64);
            }
        }
        shipment.pop_through(last_seq);
        unsaved = Some(last_cursor);
        if saved_at.elapsed() >= CURSOR_EVERY
            && let Some(cursor) = unsaved.take()
        {
            let path = cursor_path.clone();
            let _ = tokio::task::spawn_blocking(move || save_cursor(&path, cursor, false)).await;
            saved_at = Instant::now();
        }
    }
    let stopping = shipment.stopping.load(Ordering::SeqCst);
    // At daemon shutdown the stream is dropped without `close`: the container runs on, and
    // the next berthd resumes from the cursor.
    if !stopping && let Err(e) = driver.close(stream).await {
        shipment.note_error(e.to_string());
    }
    if !shipment.cancelled() {
        let path = cursor_path.clone();
        let _ = tokio::task::spawn_blocking(move || {
            // Nothing new went out: the saved position stays, only `done` changes.
            let cursor = unsaved.or_else(|| load_cursor(&path)).unwrap_or_default();
            save_cursor(&path, cursor, !stopping);
        })
        .await;
    }
    shipment.finish();
}

/// How long a container's removal waits for its delivery to send what is left: the sender
/// writes its cursor into the container's directory last, which must be done before the
/// directory goes.
const DRAIN_BEFORE_REMOVAL: Duration = Duration::from_secs(5);

/// Log delivery for every container with a logging driver plugin.
#[derive(Debug)]
pub struct Delivery {
    plugins: Arc<Plugins>,
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    containers_dir: PathBuf,
    ledger: Arc<Mutex<Ledger>>,
}

/// The deliveries by container id, and the drivers being disabled or removed, under one
/// lock: retiring a driver and registering a delivery to it never both succeed.
#[derive(Debug, Default)]
struct Ledger {
    shipments: HashMap<String, Arc<Shipment>>,
    retiring: std::collections::HashSet<String>,
}

impl Ledger {
    /// Marks `driver` retiring, or gives the containers still delivering to it.
    fn retire(&mut self, driver: &str) -> std::result::Result<(), Vec<String>> {
        let mut ids: Vec<String> = self
            .shipments
            .iter()
            .filter(|(_, s)| s.settings.driver == driver && !s.is_finished())
            .map(|(id, _)| id.clone())
            .collect();
        if !ids.is_empty() {
            ids.sort();
            return Err(ids);
        }
        self.retiring.insert(driver.to_owned());
        Ok(())
    }

    /// Registers container `id`'s delivery, unless its driver is retiring.
    fn register(&mut self, id: &str, shipment: Arc<Shipment>) -> std::result::Result<(), ()> {
        if self.retiring.contains(&shipment.settings.driver) {
            return Err(());
        }
        self.shipments.insert(id.to_owned(), shipment);
        Ok(())
    }
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

/// A logging driver being disabled or removed: while this lives, no container begins
/// delivering to it (see [`Delivery::retire`]).
#[derive(Debug)]
pub struct Retiring {
    ledger: Arc<Mutex<Ledger>>,
    driver: String,
}

impl Drop for Retiring {
    fn drop(&mut self) {
        lock(&self.ledger).retiring.remove(&self.driver);
    }
}

impl Delivery {
    /// Delivery for the containers under `<data_root>/containers`; it starts with
    /// [`Self::start`].
    pub fn new(plugins: Arc<Plugins>, data_root: &Path) -> Delivery {
        Delivery {
            plugins,
            runtime: std::sync::OnceLock::new(),
            containers_dir: data_root.join("containers"),
            ledger: Arc::default(),
        }
    }

    /// Runs delivery tasks on `runtime` from now on (once; berthd's runtime starts after
    /// its state is opened).
    pub fn start(&self, runtime: tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime);
    }

    fn spawn(&self, future: impl Future<Output = ()> + Send + 'static) -> bool {
        match self.runtime.get() {
            Some(runtime) => {
                runtime.spawn(future);
                true
            }
            None => false,
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        lock(&self.ledger)
    }

    /// Keeps new deliveries from starting to `driver` while the returned guard lives, or
    /// gives the containers that still deliver to it: a container starting while its driver
    /// is disabled is either seen here or refused.
    pub fn retire(&self, driver: &str) -> std::result::Result<Retiring, Vec<String>> {
        self.ledger().retire(driver)?;
        Ok(Retiring {
            ledger: Arc::clone(&self.ledger),
            driver: driver.to_owned(),
        })
    }

    /// Runs `future` on the runtime and waits for it from a blocking thread.
    fn block<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        // The caller's span goes along: the driver's calls nest under the container start.
        let span = tracing::Span::current();
        self.spawn(tracing::Instrument::instrument(
            async move {
                let _ = tx.send(future.await);
            },
            span,
        ));
        rx.recv_timeout(Duration::from_secs(60)).ok()
    }

    /// Checks a container's logging settings at create: the options berthd reads, and
    /// that the driver is a running logging plugin.
    pub async fn check(&self, config: &CreateRequest) -> Result<()> {
        let settings = settings(config)?;
        if settings.driver != LOCAL_DRIVER {
            self.plugins.logging_driver(&settings.driver).await?;
        }
        Ok(())
    }

    /// At daemon shutdown: every sender saves its cursor after the batch in flight and
    /// stops, so the next berthd delivers each record once. Waits up to `limit`. Blocking.
    pub fn shutdown(&self, limit: Duration) {
        let shipments: Vec<Arc<Shipment>> = self.ledger().shipments.values().cloned().collect();
        for shipment in &shipments {
            shipment.stopping.store(true, Ordering::SeqCst);
            shipment.room.notify_all();
            shipment.data.notify_one();
        }
        let deadline = Instant::now() + limit;
        for shipment in &shipments {
            let left = deadline.saturating_duration_since(Instant::now());
            if !shipment.wait_finished(left) {
                warn!(
                    "log delivery did not stop in time: records may be delivered twice after the restart"
                );
                return;
            }
        }
    }

    /// Delivery figures of container `id`, if it has a driver and has run.
    pub fn status(&self, id: &str) -> Option<LogDelivery> {
        self.ledger().shipments.get(id).map(|s| s.status())
    }

    /// Whether delivery of container `id` is still going on.
    pub fn is_active(&self, id: &str) -> bool {
        self.ledger()
            .shipments
            .get(id)
            .is_some_and(|s| !s.is_finished())
    }

    /// Whether container `id`'s last delivery began and was cut short by berthd stopping.
    /// Blocking.
    pub fn interrupted(&self, id: &str) -> bool {
        let cursor_path = self.containers_dir.join(id).join(CURSOR_FILE);
        load_saved(&cursor_path).is_some_and(|saved| !saved.done)
    }

    /// Finishes the [`Self::interrupted`] deliveries of containers that exited while berthd
    /// was down: what their local log holds after the saved cursor goes to their driver,
    /// then the stream is closed. Blocking.
    pub fn finish_interrupted(&self, records: &[ContainerRecord]) {
        for record in records {
            match self.open(record) {
                Ok(()) => self.exited(&record.id),
                Err(e) => warn!(container = %record.id, "log delivery not finished: {e}"),
            }
        }
    }

    /// Resumes delivery for containers found running at daemon start. Blocking.
    pub fn resume(&self, records: &[ContainerRecord]) {
        for record in records {
            if let Err(e) = self.open(record) {
                warn!(container = %record.id, "log delivery not resumed: {e}");
            }
        }
    }

    fn info(record: &ContainerRecord) -> LogContainer {
        LogContainer {
            id: record.id.clone(),
            name: record.name.clone(),
            image: record.image.clone(),
            image_id: record.image_id.clone(),
            labels: record
                .config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// Reads container `id`'s log back from its driver, if that driver can: `None` means
    /// the local log serves it.
    pub async fn read_back(
        &self,
        record: &ContainerRecord,
        request: &LogsRequest,
    ) -> Result<Option<Vec<LogLine>>> {
        let Some((driver, reader)) = self.open_reader(record, request, false).await? else {
            return Ok(None);
        };
        let Some(reader) = reader else {
            return Ok(Some(Vec::new()));
        };
        let mut lines = Vec::new();
        let result = loop {
            match driver.next(reader, 1024).await {
                Ok(batch) if batch.is_empty() => break Ok(Some(lines)),
                Ok(batch) => lines.extend(batch.into_iter().map(to_line)),
                Err(e) => break Err(e.into()),
            }
        };
        driver.close_reader(reader).await;
        result
    }

    /// Opens a reader on the driver of `record` if it reads back (`None` inside: the
    /// driver stores nothing for it yet).
    pub async fn open_reader(
        &self,
        record: &ContainerRecord,
        request: &LogsRequest,
        follow: bool,
    ) -> Result<Option<(Arc<LoggingDriver>, Option<plugin_host::ReaderId>)>> {
        let settings = settings(&record.config)?;
        if settings.driver == LOCAL_DRIVER {
            return Ok(None);
        }
        let driver = self.plugins.logging_driver(&settings.driver).await?;
        if !driver.capabilities().await?.can_read_back {
            return Ok(None);
        }
        let time = |text: &Option<String>| -> Result<Option<u64>> {
            text.as_deref()
                .map(|t| {
                    humantime::parse_rfc3339_weak(t)
                        .ok()
                        .and_then(|t| u64::try_from(crate::events::unix_nanos(t)).ok())
                        .ok_or_else(|| Error::Invalid(format!("{t:?} is not an RFC 3339 time")))
                })
                .transpose()
        };
        let read = ReadRequest {
            since: time(&request.since)?,
            until: time(&request.until)?,
            tail: request.tail.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            follow,
        };
        match driver.read(&record.id, read).await {
            Ok(reader) => Ok(Some((driver, Some(reader)))),
            // Nothing stored yet (the container never ran): an empty log.
            Err(plugin_host::Error::Plugin {
                kind: ErrorKind::NotFound,
                ..
            }) => Ok(Some((driver, None))),
            Err(e) => Err(e.into()),
        }
    }
}

/// A driver's record as a `container.logs` line.
pub fn to_line(entry: LogEntry) -> LogLine {
    let mut log = String::from_utf8_lossy(&entry.line).into_owned();
    if !entry.partial {
        log.push('\n');
    }
    LogLine {
        stream: if entry.stderr { "stderr" } else { "stdout" }.to_owned(),
        time: humantime::format_rfc3339_nanos(
            std::time::UNIX_EPOCH + Duration::from_nanos(entry.nanos),
        )
        .to_string(),
        log,
    }
}

impl LogHooks for Delivery {
    fn open(&self, record: &ContainerRecord) -> std::result::Result<(), String> {
        let settings = settings(&record.config).map_err(|e| e.to_string())?;
        if settings.driver == LOCAL_DRIVER {
            return Ok(());
        }
        let previous = self.ledger().shipments.get(&record.id).cloned();
        if let Some(previous) = previous
            && !previous.wait_finished(Duration::from_secs(5))
        {
            warn!(container = %record.id, "the previous run's log delivery did not finish in 5 s; it is abandoned");
            previous.cancelled.store(true, Ordering::SeqCst);
            previous.room.notify_all();
        }
        let going = || {
            format!(
                "logging driver {} is being disabled or removed",
                settings.driver
            )
        };
        if self.ledger().retiring.contains(&settings.driver) {
            return Err(going());
        }
        let plugins = Arc::clone(&self.plugins);
        let container = Self::info(record);
        let (name, options) = (settings.driver.clone(), settings.driver_options.clone());
        let about = container.clone();
        let opened = self
            .block(async move {
                let driver = plugins
                    .logging_driver(&name)
                    .await
                    .map_err(|e| e.to_string())?;
                let stream = driver
                    .open(&about, options)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((driver, stream))
            })
            .ok_or_else(|| format!("{} did not answer", settings.driver))??;
        let (driver, stream) = opened;
        let shipment = Arc::new(Shipment::new(settings.clone()));
        let registered = self.ledger().register(&record.id, Arc::clone(&shipment));
        if registered.is_err() {
            // Retired between the check above and now: the stream just opened is closed.
            self.block(async move {
                let _ = driver.close(stream).await;
            });
            return Err(going());
        }
        let dir = self.containers_dir.join(&record.id);
        let cursor_path = dir.join(CURSOR_FILE);
        let tail = Tail::new(dir.join("container.log"), load_cursor(&cursor_path));
        let reader = Arc::clone(&shipment);
        let spawned = std::thread::Builder::new()
            .name(format!("log-{}", &record.id[..12.min(record.id.len())]))
            .spawn(move || read_loop(reader, tail));
        if let Err(e) = spawned {
            shipment.finish();
            return Err(format!("cannot start the log reader: {e}"));
        }
        self.spawn(send_loop(
            shipment,
            Arc::clone(&self.plugins),
            driver,
            stream,
            container,
            cursor_path,
        ));
        Ok(())
    }

    fn exited(&self, container_id: &str) {
        if let Some(shipment) = self.ledger().shipments.get(container_id) {
            shipment.exited.store(true, Ordering::SeqCst);
        }
    }

    fn removed(&self, record: &ContainerRecord) {
        let shipment = self.ledger().shipments.remove(&record.id);
        if let Some(shipment) = shipment
            && !shipment.wait_finished(DRAIN_BEFORE_REMOVAL)
        {
            warn!(container = %record.id, "log delivery did not finish before the container's removal; the rest is dropped");
            shipment.cancelled.store(true, Ordering::SeqCst);
            shipment.room.notify_all();
            shipment.data.notify_one();
            let _ = shipment.wait_finished(Duration::from_secs(1));
        }
        let Ok(settings) = settings(&record.config) else {
            return;
        };
        if settings.driver == LOCAL_DRIVER {
            return;
        }
        let plugins = Arc::clone(&self.plugins);
        let id = record.id.clone();
        self.spawn(async move {
            match plugins.logging_driver(&settings.driver).await {
                Ok(driver) => {
                    if let Err(e) = driver.remove_logs(&id).await {
                        warn!(container = %id, "the logging driver kept its log: {e}");
                    }
                }
                Err(e) => warn!(container = %id, "the logging driver kept its log: {e}"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(driver: Option<&str>, opts: &[(&str, &str)]) -> CreateRequest {
        CreateRequest {
            image: "x".into(),
            log_driver: driver.map(str::to_owned),
            log_opts: opts
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..CreateRequest::default()
        }
    }

    #[test]
    fn cursors_say_whether_delivery_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CURSOR_FILE);
        assert!(load_saved(&path).is_none());
        // Written before `done` existed: not done, so it is finished at the next start.
        std::fs::write(&path, br#"{"inode":5,"offset":10}"#).unwrap();
        let old = load_saved(&path).unwrap();
        assert_eq!(
            old.at,
            Cursor {
                inode: 5,
                offset: 10
            }
        );
        assert!(!old.done);
        let at = Cursor {
            inode: 7,
            offset: 99,
        };
        save_cursor(&path, at, true);
        let saved = load_saved(&path).unwrap();
        assert_eq!((saved.at, saved.done), (at, true));
        assert_eq!(load_cursor(&path), Some(at));
    }

    #[test]
    fn settings_split_berthd_options_from_the_driver_ones() {
        let s = settings(&config(
            Some("json-file"),
            &[
                ("mode", "non-blocking"),
                ("max-buffer-size", "4m"),
                ("max-size", "1k"),
            ],
        ))
        .unwrap();
        assert!(!s.blocking);
        assert_eq!(s.max_buffer, 4 << 20);
        assert_eq!(s.driver_options, [("max-size".to_owned(), "1k".to_owned())]);
        let s = settings(&config(None, &[])).unwrap();
        assert_eq!((s.driver.as_str(), s.blocking), (LOCAL_DRIVER, true));
        let bad = |d, o: &[(&str, &str)]| settings(&config(d, o)).unwrap_err().to_string();
        assert!(bad(Some("json-file"), &[("mode", "fast")]).contains("mode"));
        assert!(bad(Some("json-file"), &[("max-buffer-size", "2")]).contains("max-buffer-size"));
        assert!(bad(None, &[("max-size", "1k")]).contains("takes no options"));
    }

    fn record_line(text: &str) -> Vec<u8> {
        let record = logfile::Record {
            log: format!("{text}\n"),
            stream: logfile::Stream::Stdout,
            time: "2026-12-04T20:00:00.000000001Z".into(),
            partial: false,
        };
        let mut line = serde_json::to_vec(&record).unwrap();
        line.push(b'\n');
        line
    }

    #[test]
    fn tail_follows_rotation_and_resumes_from_a_cursor() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let mut tail = Tail::new(path.clone(), None);
        assert!(tail.read(1 << 20).unwrap().is_empty());
        let mut live = File::create(&path).unwrap();
        let three = record_line("three");
        live.write_all(&record_line("one")).unwrap();
        live.write_all(&record_line("two")).unwrap();
        live.write_all(&three[..11]).unwrap();
        let got = tail.read(1 << 20).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].0.line, b"two");
        assert!(!got[1].0.stderr);
        let cursor = got[1].1;
        // The line being written is finished, then the shim rotates and goes on.
        live.write_all(&three[11..]).unwrap();
        std::fs::rename(&path, logfile::rotated(&path, 1)).unwrap();
        let mut live = File::create(&path).unwrap();
        live.write_all(&record_line("four")).unwrap();
        let lines = |tail: &mut Tail| -> Vec<Vec<u8>> {
            let read = tail.read(1 << 20).unwrap();
            read.into_iter().map(|r| r.0.line).collect()
        };
        assert_eq!(lines(&mut tail), [b"three".to_vec(), b"four".to_vec()]);
        // A new reader from the saved cursor starts in the rotated file.
        let mut resumed = Tail::new(path.clone(), Some(cursor));
        assert_eq!(lines(&mut resumed), [b"three".to_vec(), b"four".to_vec()]);
    }

    #[test]
    fn a_driver_retires_only_when_nobody_delivers_to_it_and_then_takes_no_one() {
        let shipment =
            |driver: &str| Arc::new(Shipment::new(settings(&config(Some(driver), &[])).unwrap()));
        let mut ledger = Ledger::default();
        ledger.register("c1", shipment("syslog")).unwrap();
        ledger.register("c2", shipment("other")).unwrap();
        assert_eq!(ledger.retire("syslog"), Err(vec!["c1".to_owned()]));
        assert!(
            ledger.register("c3", shipment("syslog")).is_ok(),
            "not retiring yet"
        );
        ledger.shipments["c1"].finish();
        ledger.shipments["c3"].finish();
        ledger.retire("syslog").unwrap();
        assert!(ledger.register("c4", shipment("syslog")).is_err());
        assert!(ledger.register("c5", shipment("other")).is_ok());
        ledger.retiring.remove("syslog");
        assert!(ledger.register("c4", shipment("syslog")).is_ok());
    }

    #[test]
    fn non_blocking_buffers_drop_the_oldest() {
        let mut s = settings(&config(Some("x"), &[("mode", "non-blocking")])).unwrap();
        s.max_buffer = 1024;
        let shipment = Shipment::new(s);
        let entry = |n: u8| LogEntry {
            stderr: false,
            nanos: u64::from(n),
            line: vec![n; 200],
            partial: false,
        };
        shipment.push((0..10).map(|n| (entry(n), Cursor::default())).collect());
        let (batch, last, _) = shipment.peek_batch();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0].nanos, 7);
        assert_eq!(shipment.dropped.load(Ordering::Relaxed), 7);
        shipment.pop_through(last.unwrap().0);
        assert_eq!(shipment.status().buffered_bytes, 0);
    }
}
