//! Structured logging into berthd through the `berth:types/host-log` import.
//!
//! Lines become `tracing` events on the host, tagged with the plugin's name and the span of the
//! API call being served; fields are prefixed with `plugin.` there. The host truncates and
//! rate-limits (see `types.wit`), and logging never fails, so these functions return nothing.
//!
//! Standard output and standard error also reach the host log, but only at debug level and as
//! unstructured text: use this module for anything an operator should see.
//!
//! Off wasm32 (unit tests of a driver on the build machine) there is no host to import from,
//! so lines go to standard error instead and [`enabled`] is always true.

pub use crate::shared::berth::types::host_log::Level;

/// Emits one line at `level` with key/value `fields`, for example
/// `log(Level::Info, "volume created", &[("volume", name)])`.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    imp::log(level, message, fields);
}

/// Whether a line at `level` would be recorded now; lets a plugin skip building an expensive
/// message. Not needed around plain calls: the host filters anyway.
pub fn enabled(level: Level) -> bool {
    imp::enabled(level)
}

/// [`log`] at [`Level::Trace`].
pub fn trace(message: &str, fields: &[(&str, &str)]) {
    log(Level::Trace, message, fields);
}

/// [`log`] at [`Level::Debug`].
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(Level::Debug, message, fields);
}

/// [`log`] at [`Level::Info`].
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(Level::Info, message, fields);
}

/// [`log`] at [`Level::Warn`].
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(Level::Warn, message, fields);
}

/// [`log`] at [`Level::Error`].
pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(Level::Error, message, fields);
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::Level;
    use crate::shared::berth::types::host_log;

    pub(super) fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        // The generated import takes owned strings (wit-bindgen's default ownership mode).
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        host_log::log(level, message, &fields);
    }

    pub(super) fn enabled(level: Level) -> bool {
        host_log::enabled(level)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::Level;
    use std::io::Write;

    pub(super) fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
        let level = match level {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        };
        let mut line = format!("{level} {message}");
        for (k, v) in fields {
            line.push_str(&format!(" {k}={v:?}"));
        }
        // Like the host, never fail the caller because a log line could not be written.
        let _ = writeln!(std::io::stderr(), "{line}");
    }

    pub(super) fn enabled(_level: Level) -> bool {
        true
    }
}
