//! Constructors and conversions for `berth:types/types.error`, the error every fallible berth
//! function returns.
//!
//! The WIT asks for a single-line English message without secrets and truncates messages over
//! 4 KiB on the host side; [`Error::new`] enforces both on the guest side so that what the
//! plugin author wrote is what the API caller sees (a host-side cut could land anywhere, and a
//! newline would break one-line log formats).

use std::fmt;
use std::io;

use crate::{Error, ErrorKind};

/// The longest message the host passes through unchanged (`types.wit`, `record error`).
pub const MAX_MESSAGE_BYTES: usize = 4096;

impl Error {
    /// An error of `kind` with `message` made single-line (line breaks and other control
    /// characters become spaces) and cut to at most [`MAX_MESSAGE_BYTES`] on a character
    /// boundary, ending in `…` when cut.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: sanitize_message(message.into()),
        }
    }

    /// `not-found`: the named object does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// `already-exists`: the name is taken and the call is not an idempotent repeat.
    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }

    /// `invalid-argument`: malformed or unsupported input (unknown key, bad value, bad name).
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    /// `failed-precondition`: valid input, but the object's state forbids the operation.
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }

    /// `permission-denied`: refused by policy.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }

    /// `resource-exhausted`: out of space, addresses, ports or a configured quota.
    pub fn resource_exhausted(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceExhausted, message)
    }

    /// `unavailable`: transient; the same call may succeed later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// `internal`: a bug or a broken invariant.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// An error for a failed file-system operation: `context` says what was being done (for
    /// example `"writing volumes/data/volume.json"`), the kind comes from [`io_error_kind`].
    pub fn from_io(context: &str, err: &io::Error) -> Self {
        Self::new(io_error_kind(err), format!("{context}: {err}"))
    }
}

impl ErrorKind {
    /// The kind's WIT name, for example `"not-found"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::AlreadyExists => "already-exists",
            ErrorKind::InvalidArgument => "invalid-argument",
            ErrorKind::FailedPrecondition => "failed-precondition",
            ErrorKind::PermissionDenied => "permission-denied",
            ErrorKind::ResourceExhausted => "resource-exhausted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The berth error kind for an I/O error inside the sandbox.
///
/// Only exhaustion maps to something other than `internal`: a missing or unreadable file in a
/// plugin's own state directory is a broken invariant of the plugin, not a fault of the caller,
/// so it must not be reported as `not-found` or `permission-denied` (those would tell the API
/// caller that *their* object is missing or that *they* lack rights). A plugin that means
/// `not-found` checks for the object itself and says so.
pub fn io_error_kind(err: &io::Error) -> ErrorKind {
    match err.kind() {
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge => {
            ErrorKind::ResourceExhausted
        }
        _ => ErrorKind::Internal,
    }
}

fn sanitize_message(message: String) -> String {
    let needs_cleaning = message.chars().any(char::is_control);
    let mut message = if needs_cleaning {
        message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    } else {
        message
    };
    if message.len() > MAX_MESSAGE_BYTES {
        const ELLIPSIS: &str = "…";
        let mut cut = MAX_MESSAGE_BYTES - ELLIPSIS.len();
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(ELLIPSIS);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_become_single_line() {
        let e = Error::invalid_argument("bad\nvalue\r\tfor key");
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert_eq!(e.message, "bad value  for key");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        // 'é' is two bytes, so an odd limit would split one without the boundary search.
        let e = Error::internal("é".repeat(MAX_MESSAGE_BYTES));
        assert!(e.message.len() <= MAX_MESSAGE_BYTES);
        assert!(e.message.ends_with('…'));
        let short = Error::internal("x".repeat(MAX_MESSAGE_BYTES));
        assert_eq!(short.message.len(), MAX_MESSAGE_BYTES);
    }

    #[test]
    fn io_errors_map_exhaustion_and_nothing_else() {
        let full = io::Error::from(io::ErrorKind::StorageFull);
        assert_eq!(io_error_kind(&full), ErrorKind::ResourceExhausted);
        let missing = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(io_error_kind(&missing), ErrorKind::Internal);
        let e = Error::from_io("reading meta", &missing);
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.starts_with("reading meta: "));
    }

    #[test]
    fn kinds_print_their_wit_names() {
        assert_eq!(
            ErrorKind::FailedPrecondition.to_string(),
            "failed-precondition"
        );
        assert_eq!(ErrorKind::NotFound.as_str(), "not-found");
    }
}
