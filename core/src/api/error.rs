//! Engine errors → JSON-RPC errors. The code comes from [`ErrorKind::code`] (berth-api), the
//! message from the error's `Display`, which names the object that failed.

use berth_api::ErrorKind;
use berth_api::error::rpc_error;
use jsonrpsee::types::ErrorObjectOwned;

/// An engine error that knows its kind.
pub trait ApiError: std::error::Error {
    /// The kind the client sees.
    fn kind(&self) -> ErrorKind;

    /// The wire form. Internal errors are also logged with their whole source chain, since
    /// the client sees only the top message.
    fn to_rpc(&self) -> ErrorObjectOwned {
        let kind = self.kind();
        if kind == ErrorKind::Internal {
            let mut chain = self.to_string();
            let mut source = self.source();
            while let Some(s) = source {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                source = s.source();
            }
            tracing::error!(error = %chain, "internal error");
        }
        rpc_error(kind, self.to_string())
    }
}

impl ApiError for crate::store::Error {
    fn kind(&self) -> ErrorKind {
        crate::store::Error::kind(self)
    }
}

impl ApiError for crate::events::Error {
    fn kind(&self) -> ErrorKind {
        crate::events::Error::kind(self)
    }
}

impl ApiError for crate::daemon::Error {
    fn kind(&self) -> ErrorKind {
        crate::daemon::Error::kind(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_map_through_their_kind() {
        let e = crate::store::Error::Task("worker panicked".into());
        let wire = e.to_rpc();
        assert_eq!(wire.code(), ErrorKind::Internal.code());
        assert!(wire.message().contains("worker panicked"));
        let e = crate::daemon::Error::SocketLive {
            socket: "/run/x.sock".into(),
        };
        let wire = e.to_rpc();
        assert_eq!(wire.code(), ErrorKind::FailedPrecondition.code());
        assert!(wire.message().contains("/run/x.sock"));
    }
}
