//! Why a connection ended abnormally.
//!
//! These never reach the client (the NBD protocol has no way to carry them);
//! they are returned from [`crate::serve_connection`] and logged by
//! [`crate::NbdServer::serve`].

use std::io;

/// A connection-level failure.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket failed or the client hung up mid-message.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The client broke the protocol (bad magic, unknown flags, ...) and the
    /// connection was dropped as the spec allows.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The client stalled longer than the configured timeout.
    #[error("timed out during {0}")]
    Timeout(&'static str),
}
