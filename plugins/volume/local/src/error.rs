//! The driver's failures, and how each maps onto a `berth:types` error kind (which decides the
//! JSON-RPC error the API caller sees).

use std::io;

use berth_plugin::{Error, ErrorKind};

/// Why a volume operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The name breaks berth's volume name rule.
    #[error("invalid volume name {name:?}: must match [a-zA-Z0-9][a-zA-Z0-9_.-]{{0,254}}")]
    InvalidName { name: String },

    /// A Docker `local` driver option that berth's local driver cannot honour: berthd only
    /// bind-mounts a directory the driver returns, so there is nothing to mount a device,
    /// tmpfs or NFS share with.
    #[error(
        "option {key:?} is not supported: berth's local driver keeps volumes as directories in \
         its state directory and cannot mount devices, tmpfs or network file systems \
         (the docker local driver options type, device and o are not available)"
    )]
    UnsupportedOption { key: String },

    /// An option key the driver does not know.
    #[error("unknown option {key:?}: the local driver takes no options")]
    UnknownOption { key: String },

    /// No volume by that name.
    #[error("volume {name:?} not found")]
    NotFound { name: String },

    /// The name is taken by a volume created with other options.
    #[error("volume {name:?} already exists with different options")]
    AlreadyExists { name: String },

    /// `remove` while mount ids are outstanding.
    #[error("volume {name:?} is in use: {mounts} outstanding mount(s)")]
    InUse { name: String, mounts: usize },

    /// A mount id that cannot be recorded.
    #[error(
        "mount id of {len} bytes cannot be recorded: ids must be non-empty and at most \
         255 bytes (127 bytes if they contain characters other than [A-Za-z0-9_.-])"
    )]
    InvalidMountId { len: usize },

    /// A volume whose `data` directory has disappeared: an interrupted removal or outside
    /// interference. Removing the volume clears it.
    #[error("data directory of volume {name:?} is missing")]
    DataMissing { name: String },

    /// A volume directory without readable metadata.
    #[error("metadata {path} of volume {name:?} is unusable: {reason}")]
    BadMeta {
        name: String,
        path: String,
        reason: String,
    },

    /// A file-system operation in the state directory failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

impl VolumeError {
    /// Shorthand for [`VolumeError::Io`].
    pub fn io(op: &'static str, path: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The berth error kind reported for this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidName { .. }
            | Self::UnsupportedOption { .. }
            | Self::UnknownOption { .. }
            | Self::InvalidMountId { .. } => ErrorKind::InvalidArgument,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::InUse { .. } => ErrorKind::FailedPrecondition,
            Self::DataMissing { .. } | Self::BadMeta { .. } => ErrorKind::Internal,
            Self::Io { source, .. } => berth_plugin::error::io_error_kind(source),
        }
    }
}

impl From<VolumeError> for Error {
    fn from(err: VolumeError) -> Self {
        Error::new(err.kind(), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_wit_contract() {
        let cases = [
            (
                VolumeError::UnknownOption { key: "size".into() },
                ErrorKind::InvalidArgument,
            ),
            (
                VolumeError::UnsupportedOption { key: "type".into() },
                ErrorKind::InvalidArgument,
            ),
            (
                VolumeError::NotFound { name: "v".into() },
                ErrorKind::NotFound,
            ),
            (
                VolumeError::AlreadyExists { name: "v".into() },
                ErrorKind::AlreadyExists,
            ),
            (
                VolumeError::InUse {
                    name: "v".into(),
                    mounts: 2,
                },
                ErrorKind::FailedPrecondition,
            ),
            (
                VolumeError::io("writing", "x", io::ErrorKind::StorageFull.into()),
                ErrorKind::ResourceExhausted,
            ),
            (
                VolumeError::io("reading", "x", io::ErrorKind::NotFound.into()),
                ErrorKind::Internal,
            ),
        ];
        for (err, kind) in cases {
            assert_eq!(err.kind(), kind, "{err}");
            let wit = Error::from(err);
            assert_eq!(wit.kind, kind);
        }
    }

    #[test]
    fn messages_name_the_object() {
        let e = Error::from(VolumeError::InUse {
            name: "db".into(),
            mounts: 1,
        });
        assert_eq!(
            e.message,
            r#"volume "db" is in use: 1 outstanding mount(s)"#
        );
    }
}
