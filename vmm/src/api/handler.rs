//! What the control socket asks of the VM's owner: the [`ApiHandler`] that answers
//! a parsed request, and [`ApiError`], the socket's errors (a handler's refusal, a
//! malformed request, a socket that cannot be set up) with their reply.

use std::path::PathBuf;

use super::protocol::{ErrorKind, ProtocolError, Reply, Request};
/// What the control socket controls: answers one parsed request.
///
/// Called on the server's thread, one request at a time, so it should not block for
/// long (return the latest known statistics rather than waiting for the guest). The
/// server answers `help` itself; a panic becomes an `internal` error reply.
pub trait ApiHandler: Send + Sync {
    /// The reply's `result` for `req`, or why there is none.
    fn handle(&self, req: &Request) -> Result<serde_json::Value, ApiError>;
}

impl<F> ApiHandler for F
where
    F: Fn(&Request) -> Result<serde_json::Value, ApiError> + Send + Sync,
{
    fn handle(&self, req: &Request) -> Result<serde_json::Value, ApiError> {
        self(req)
    }
}

/// Errors of the control socket: a handler's refusal, a malformed request, or a failure
/// to set up the socket.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A request the handler cannot honour as given (e.g. a target above guest RAM).
    #[error("{0}")]
    BadArgument(String),
    /// What the request is about does not exist here (e.g. no balloon device).
    #[error("{0}")]
    Unavailable(String),
    /// The handler failed.
    #[error("{0}")]
    Internal(String),
    /// The request line was rejected.
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The socket path exists and is not a socket: the server does not replace it.
    #[error("refusing to replace {0}: it exists and is not a socket")]
    NotASocket(PathBuf),
    /// Another server is listening on the socket path.
    #[error("{0} is in use: another server is listening on it")]
    InUse(PathBuf),
    /// Setting up the socket failed.
    #[error("cannot {op} control socket {path}")]
    Socket {
        /// What was being done (`bind`, `remove stale`, …).
        op: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Creating the server's wake-up eventfd or thread failed.
    #[error("cannot start the control-socket server")]
    Start(#[source] std::io::Error),
}

impl ApiError {
    /// The reply's `error.kind` for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::BadArgument(_) => ErrorKind::BadArgument,
            ApiError::Unavailable(_) => ErrorKind::Unavailable,
            ApiError::Protocol(e) => e.kind(),
            ApiError::Internal(_)
            | ApiError::NotASocket(_)
            | ApiError::InUse(_)
            | ApiError::Socket { .. }
            | ApiError::Start(_) => ErrorKind::Internal,
        }
    }

    /// The error as a failed reply to the request with this id.
    pub fn to_reply(&self, id: Option<serde_json::Value>) -> Reply {
        let mut message = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        Reply::error(id, self.kind(), message)
    }
}
