//! berth's `syslog` logging driver, a WebAssembly component implementing
//! `berth:logging/logging-driver@1.0.0`: each record becomes one syslog message (`format`
//! module) sent over UDP, or over TCP with octet counting, to the container's
//! `syslog-address`.
//!
//! berthd grants the plugin sockets to exactly the addresses in its `berth.allow-connect`
//! configuration (`berth plugin set syslog berth.allow-connect=udp:IP:PORT,...`); a
//! container naming any other address gets `permission-denied` on its first batch.
//!
//! Options (`--log-opt`): `syslog-address` (`udp://IP:PORT` or `tcp://IP:PORT`, required),
//! `syslog-facility` (default `daemon`), `syslog-format` (`rfc5424`, the default,
//! `rfc5424micro` or `rfc3164`) and `tag` (default `{{.ID}}`). Configuration keys:
//! `hostname`, the HOSTNAME field of every message (default `-`, RFC 5424's "unknown").
//! The driver stores nothing, so it cannot serve `berth logs`: berthd reads the local log.

mod format;

use std::cell::RefCell;
use std::io::{self, Write};
use std::net::{TcpStream, UdpSocket};

use berth_plugin::logging::exports::berth::logging::driver::{
    self, ContainerInfo, GuestLogReader, GuestLogStream, LogRecord, LogSource, LoggingCapabilities,
    ReadOptions,
};
use berth_plugin::plugin::{self, PluginInfo};
use berth_plugin::{Error, config};

use format::{Container, Options, Transport};

/// The component's implementation of its exported interfaces.
struct Syslog;

thread_local! {
    /// The `hostname` configuration.
    static HOSTNAME: RefCell<String> = RefCell::new("-".to_owned());
}

impl plugin::Guest for Syslog {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "syslog".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Container logs as syslog messages (RFC 5424) over UDP or TCP".to_owned(),
        }
    }

    fn configure(config: Vec<(String, String)>) -> Result<(), Error> {
        config::check_keys(&config, &["hostname"], "configuration key")?;
        let hostname = config::get(&config, "hostname").unwrap_or("-");
        if hostname.is_empty() || !hostname.chars().all(|c| c.is_ascii_graphic()) {
            return Err(Error::invalid_argument(format!(
                "hostname {hostname:?}: printable ASCII without spaces"
            )));
        }
        HOSTNAME.with(|h| *h.borrow_mut() = hostname.to_owned());
        Ok(())
    }
}

/// Where a stream's messages go.
enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream),
}

/// An open container log: its settings and, once the first batch came, its socket.
struct LogStream {
    id: String,
    options: Options,
    link: RefCell<Option<Link>>,
    closed: RefCell<bool>,
}

fn send_error(options: &Options, err: &io::Error) -> Error {
    let scheme = match options.transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
    };
    let target = format!("{scheme}://{}", options.address);
    match err.kind() {
        io::ErrorKind::PermissionDenied => Error::permission_denied(format!(
            "this plugin may not connect to {target}: grant it with `berth plugin set <plugin> berth.allow-connect={scheme}:{}`",
            options.address
        )),
        _ => Error::unavailable(format!("send to {target}: {err}")),
    }
}

impl LogStream {
    fn connect(&self) -> io::Result<Link> {
        let address = self.options.address;
        match self.options.transport {
            Transport::Udp => {
                let local = if address.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                };
                let socket = UdpSocket::bind(local)?;
                socket.connect(address)?;
                Ok(Link::Udp(socket))
            }
            Transport::Tcp => {
                let stream = TcpStream::connect(address)?;
                // Each batch is written whole; no need to wait for Nagle.
                let _ = stream.set_nodelay(true);
                Ok(Link::Tcp(stream))
            }
        }
    }

    fn send(&self, batch: &[LogRecord]) -> io::Result<()> {
        let mut slot = self.link.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.connect()?);
        }
        let hostname = HOSTNAME.with(|h| h.borrow().clone());
        let message = |r: &LogRecord| {
            format::message(
                &self.options,
                &hostname,
                r.source == LogSource::Stderr,
                r.timestamp_nanos,
                &r.line,
            )
        };
        let result = match slot.as_mut() {
            Some(Link::Udp(socket)) => batch
                .iter()
                .try_for_each(|r| socket.send(&message(r)).map(drop)),
            Some(Link::Tcp(stream)) => {
                let mut framed = Vec::new();
                for r in batch {
                    framed.extend_from_slice(&format::octet_counted(&message(r)));
                }
                stream.write_all(&framed)
            }
            None => Ok(()),
        };
        if result.is_err() {
            // The next batch (or the host's retry of this one) connects again.
            *slot = None;
        }
        result
    }
}

impl GuestLogStream for LogStream {
    fn write(&self, batch: Vec<LogRecord>) -> Result<(), Error> {
        if *self.closed.borrow() {
            return Err(Error::failed_precondition(format!(
                "the log of container {} is closed",
                self.id
            )));
        }
        self.send(&batch).map_err(|e| send_error(&self.options, &e))
    }

    fn close(&self) -> Result<(), Error> {
        *self.closed.borrow_mut() = true;
        if let Some(Link::Tcp(mut stream)) = self.link.borrow_mut().take() {
            let _ = stream.flush();
        }
        Ok(())
    }
}

/// Never made: this driver cannot read back.
struct LogReader;

impl GuestLogReader for LogReader {
    fn next(&self, _max: u32) -> Result<Vec<LogRecord>, Error> {
        Ok(Vec::new())
    }
}

impl driver::Guest for Syslog {
    type LogStream = LogStream;
    type LogReader = LogReader;

    fn start_logging(
        container: ContainerInfo,
        options: Vec<(String, String)>,
    ) -> Result<driver::LogStream, Error> {
        config::check_keys(&options, format::OPTION_KEYS, "log option")?;
        let about = Container {
            id: container.id.clone(),
            name: container.name,
            image: container.image,
            image_id: container.image_id,
        };
        let options = Options::parse(&options, &about).map_err(Error::invalid_argument)?;
        Ok(driver::LogStream::new(LogStream {
            id: container.id,
            options,
            link: RefCell::new(None),
            closed: RefCell::new(false),
        }))
    }

    fn read_logs(_container_id: String, _options: ReadOptions) -> Result<driver::LogReader, Error> {
        Err(Error::failed_precondition(
            "the syslog driver stores nothing to read back",
        ))
    }

    fn remove_logs(container_id: String) -> Result<(), Error> {
        Err(Error::not_found(format!(
            "the syslog driver stores nothing for container {container_id}"
        )))
    }

    fn capabilities() -> LoggingCapabilities {
        LoggingCapabilities {
            can_read_back: false,
        }
    }
}

berth_plugin::export_logging_driver!(Syslog);
