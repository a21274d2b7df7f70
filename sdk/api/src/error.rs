//! The one mapping between engine error kinds and JSON-RPC error codes.
//!
//! Every engine module classifies its errors into an [`ErrorKind`]; this module is the
//! only place that turns a kind into a wire code (server side) and back (client side).

use jsonrpsee::types::ErrorObjectOwned;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What went wrong, independent of which module failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ErrorKind {
    /// The named object (container, image, ...) does not exist.
    NotFound,
    /// An object with that name or id already exists.
    AlreadyExists,
    /// A parameter is malformed or out of range.
    InvalidArgument,
    /// The object is not in a state that allows the operation (e.g. removing a running container).
    FailedPrecondition,
    /// The caller is not allowed to do this.
    PermissionDenied,
    /// A limit was hit (disk, memory, quota, plugin limits).
    ResourceExhausted,
    /// A dependency (registry, plugin, kernel facility) is unavailable; retrying may help.
    Unavailable,
    /// A bug or an unexpected host failure.
    Internal,
}

impl ErrorKind {
    /// All kinds, for documentation and round-trip tests.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::InvalidArgument,
        ErrorKind::FailedPrecondition,
        ErrorKind::PermissionDenied,
        ErrorKind::ResourceExhausted,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
    ];

    /// The JSON-RPC error code for this kind. Invalid arguments and internal errors reuse the
    /// standard codes; the rest live in -32020..-32029, clear of the codes jsonrpsee itself
    /// uses (-32000..-32011).
    pub const fn code(self) -> i32 {
        match self {
            ErrorKind::InvalidArgument => -32602,
            ErrorKind::Internal => -32603,
            ErrorKind::NotFound => -32020,
            ErrorKind::AlreadyExists => -32021,
            ErrorKind::FailedPrecondition => -32022,
            ErrorKind::PermissionDenied => -32023,
            ErrorKind::ResourceExhausted => -32024,
            ErrorKind::Unavailable => -32025,
        }
    }

    /// The kind a wire code stands for, if it is one of ours or a standard one.
    pub fn from_code(code: i32) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The name used in error data and documentation.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AlreadyExists => "AlreadyExists",
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::FailedPrecondition => "FailedPrecondition",
            ErrorKind::PermissionDenied => "PermissionDenied",
            ErrorKind::ResourceExhausted => "ResourceExhausted",
            ErrorKind::Unavailable => "Unavailable",
            ErrorKind::Internal => "Internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Machine-readable details carried in the `data` member of every berth error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorData {
    /// The error kind.
    pub kind: ErrorKind,
    /// The parameter that was rejected, for invalid-params errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For a container whose command could not run: the exit code a shell would report
    /// (126 not executable, 127 not found).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Builds the wire error for an engine failure.
pub fn rpc_error(kind: ErrorKind, message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        kind.code(),
        message.into(),
        Some(ErrorData {
            kind,
            field: None,
            exit_code: None,
        }),
    )
}

/// Builds a -32602 error that names the parameter at fault.
pub fn invalid_params(field: Option<String>, message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        ErrorKind::InvalidArgument.code(),
        message.into(),
        Some(ErrorData {
            kind: ErrorKind::InvalidArgument,
            field,
            exit_code: None,
        }),
    )
}

/// A container start failure that carries the command's exit code.
pub fn start_failed(message: impl Into<String>, exit_code: i32) -> ErrorObjectOwned {
    ErrorObjectOwned::owned(
        ErrorKind::FailedPrecondition.code(),
        message.into(),
        Some(ErrorData {
            kind: ErrorKind::FailedPrecondition,
            field: None,
            exit_code: Some(exit_code),
        }),
    )
}

/// The data of an error received from berthd, if it carries berth's.
pub fn data_of(error: &jsonrpsee::types::ErrorObject<'_>) -> Option<ErrorData> {
    error
        .data()
        .and_then(|raw| serde_json::from_str::<ErrorData>(raw.get()).ok())
}

/// The kind of an error received from berthd, read from its data or else its code.
pub fn kind_of(error: &jsonrpsee::types::ErrorObject<'_>) -> Option<ErrorKind> {
    error
        .data()
        .and_then(|raw| serde_json::from_str::<ErrorData>(raw.get()).ok())
        .map(|d| d.kind)
        .or_else(|| ErrorKind::from_code(error.code()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for kind in ErrorKind::ALL {
            assert!(seen.insert(kind.code()), "duplicate code for {kind}");
            assert_eq!(ErrorKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(ErrorKind::from_code(-32700), None);
    }

    #[test]
    fn codes_avoid_jsonrpsee_reserved_range() {
        for kind in ErrorKind::ALL {
            let c = kind.code();
            assert!(
                !(-32011..=-32000).contains(&c),
                "{kind} uses jsonrpsee code {c}"
            );
        }
    }

    #[test]
    fn kind_survives_the_wire() {
        let err = rpc_error(ErrorKind::NotFound, "no such container: x");
        let wire = serde_json::to_string(&err).unwrap();
        let back: ErrorObjectOwned = serde_json::from_str(&wire).unwrap();
        assert_eq!(kind_of(&back), Some(ErrorKind::NotFound));
        assert_eq!(back.message(), "no such container: x");
    }
}
