//! `tzero-nbd`: an NBD server (fixed newstyle) written from the protocol
//! specification, knowing nothing of FlashCopy.
//!
//! The daemon implements [`ExportProvider`] and [`BlockDevice`]; the server
//! negotiates with clients ([`handshake`]), validates requests
//! ([`request`]), runs the blocking device calls on tokio's blocking pool and
//! answers out of order ([`transmission`]); [`tls`] holds the credentials
//! offered after `NBD_OPT_STARTTLS`. [`wire`] holds the pure codec and
//! [`mem`] an in-memory device for tests and fuzzing.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use tzero_nbd::{mem::{MemDevice, MemProvider}, NbdServer, ServerConfig};
//! let provider = Arc::new(MemProvider::new());
//! provider.insert("disk", Arc::new(MemDevice::new(1 << 20, 4096)), None);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:10809").await?;
//! let (_stop, shutdown) = tokio::sync::watch::channel(false);
//! NbdServer::new(provider, ServerConfig::default()).serve(listener, shutdown).await
//! # }
//! ```

pub mod device;
pub mod error;
pub mod fuzzing;
pub mod handshake;
pub mod mem;
pub mod request;
pub mod server;
pub mod tls;
pub mod transmission;
pub mod wire;

pub use device::{nbd_errno, BlockDevice, DeviceError, ExportProvider, Extent};
pub use error::ConnError;
pub use server::{serve, serve_connection, ConnStats, NbdServer, ServerConfig};
pub use tls::{Tls, TlsError};
