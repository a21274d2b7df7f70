//! berth's `json-file` logging driver, a WebAssembly component implementing
//! `berth:logging/logging-driver@1.0.0`.
//!
//! Each container's log is kept in the plugin's state directory (preopened by berthd at
//! `/state`) in docker's json-file format, rotated by size and optionally gzipped
//! (`files` module), and read back for `berth logs`.
//!
//! Options (`--log-opt`), as docker's json-file driver: `max-size` (e.g. `10m`; default
//! unlimited), `max-file` (files kept, default 1, needs `max-size`) and `compress` (gzip
//! rotated files). Configuration keys: none.

mod files;

use std::cell::RefCell;
use std::io;

use berth_plugin::logging::exports::berth::logging::driver::{
    self, ContainerInfo, GuestLogReader, GuestLogStream, LogRecord, LogSource, LoggingCapabilities,
    ReadOptions,
};
use berth_plugin::plugin::{self, PluginInfo};
use berth_plugin::{Error, config, fs::STATE_DIR};

use files::{Entry, Options, Selection, Stream};

/// The component's implementation of its exported interfaces.
struct JsonFile;

/// Most records `next` returns at once (the host asks for at most 1024).
const MAX_READ: u32 = 1024;

fn io_error(what: &str, id: &str, err: &io::Error) -> Error {
    match err.kind() {
        io::ErrorKind::InvalidInput => Error::invalid_argument(err.to_string()),
        _ => Error::from_io(&format!("{what} of container {id}"), err),
    }
}

fn to_entry(record: LogRecord) -> Entry {
    Entry {
        stream: match record.source {
            LogSource::Stdout => Stream::Stdout,
            LogSource::Stderr => Stream::Stderr,
        },
        nanos: record.timestamp_nanos,
        line: record.line,
        partial: record.partial,
    }
}

fn to_record(entry: Entry) -> LogRecord {
    LogRecord {
        source: match entry.stream {
            Stream::Stdout => LogSource::Stdout,
            Stream::Stderr => LogSource::Stderr,
        },
        timestamp_nanos: entry.nanos,
        line: entry.line,
        partial: entry.partial,
    }
}

impl plugin::Guest for JsonFile {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "json-file".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Container logs as docker json-file lines, rotated and read back"
                .to_owned(),
        }
    }

    fn configure(config: Vec<(String, String)>) -> Result<(), Error> {
        config::check_keys(&config, &[], "configuration key")
    }
}

/// An open container log.
struct LogStream {
    id: String,
    writer: RefCell<Option<files::Writer>>,
}

impl GuestLogStream for LogStream {
    fn write(&self, batch: Vec<LogRecord>) -> Result<(), Error> {
        let mut slot = self.writer.borrow_mut();
        let Some(writer) = slot.as_mut() else {
            return Err(Error::failed_precondition(format!(
                "the log of container {} is closed",
                self.id
            )));
        };
        let entries: Vec<Entry> = batch.into_iter().map(to_entry).collect();
        writer
            .write(&entries)
            .map_err(|e| io_error("write the log", &self.id, &e))
    }

    fn close(&self) -> Result<(), Error> {
        if let Some(mut writer) = self.writer.borrow_mut().take() {
            writer
                .sync()
                .map_err(|e| io_error("flush the log", &self.id, &e))?;
        }
        Ok(())
    }
}

/// A cursor over a stored log.
struct LogReader {
    id: String,
    reader: RefCell<files::Reader>,
}

impl GuestLogReader for LogReader {
    fn next(&self, max: u32) -> Result<Vec<LogRecord>, Error> {
        let entries = self
            .reader
            .borrow_mut()
            .next(max.clamp(1, MAX_READ) as usize)
            .map_err(|e| io_error("read the log", &self.id, &e))?;
        Ok(entries.into_iter().map(to_record).collect())
    }
}

impl driver::Guest for JsonFile {
    type LogStream = LogStream;
    type LogReader = LogReader;

    fn start_logging(
        container: ContainerInfo,
        options: Vec<(String, String)>,
    ) -> Result<driver::LogStream, Error> {
        config::check_keys(&options, files::OPTION_KEYS, "log option")?;
        let options = Options::parse(&options).map_err(Error::invalid_argument)?;
        let writer = files::Writer::open(STATE_DIR.as_ref(), &container.id, options)
            .map_err(|e| io_error("open the log", &container.id, &e))?;
        Ok(driver::LogStream::new(LogStream {
            id: container.id,
            writer: RefCell::new(Some(writer)),
        }))
    }

    fn read_logs(container_id: String, options: ReadOptions) -> Result<driver::LogReader, Error> {
        let selection = Selection {
            since: options.since,
            until: options.until,
            tail: options.tail,
            follow: options.follow,
        };
        let reader = files::Reader::open(STATE_DIR.as_ref(), &container_id, selection).map_err(
            |e| match e.kind() {
                io::ErrorKind::NotFound => Error::not_found(e.to_string()),
                _ => io_error("read the log", &container_id, &e),
            },
        )?;
        Ok(driver::LogReader::new(LogReader {
            id: container_id,
            reader: RefCell::new(reader),
        }))
    }

    fn remove_logs(container_id: String) -> Result<(), Error> {
        files::remove(STATE_DIR.as_ref(), &container_id).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                Error::not_found(format!("no log is stored for container {container_id}"))
            }
            _ => io_error("remove the log", &container_id, &e),
        })
    }

    fn capabilities() -> LoggingCapabilities {
        LoggingCapabilities {
            can_read_back: true,
        }
    }
}

berth_plugin::export_logging_driver!(JsonFile);
