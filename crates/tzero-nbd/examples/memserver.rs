//! Serves an in-memory export over NBD, for manual testing and for
//! benchmarking the protocol layer against other servers.
//!
//! Usage: `cargo run --release --example memserver -- [PORT] [SIZE_MIB]`
//! then e.g. `nbdinfo nbd://127.0.0.1:PORT/mem`. Stops on Ctrl-C or stdin EOF.

use std::sync::Arc;

use tzero_nbd::mem::{MemDevice, MemProvider};
use tzero_nbd::{NbdServer, ServerConfig};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10809);
    let mib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let provider = Arc::new(MemProvider::new());
    provider.insert(
        "mem",
        Arc::new(MemDevice::new(mib << 20, 65536)),
        Some("in-memory"),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("serving nbd://127.0.0.1:{port}/mem ({mib} MiB)");
    let (stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        // Stop when stdin closes, so a parent script can end us cleanly.
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut tokio::io::stdin(), &mut sink).await;
        let _ = stop.send(true);
    });
    NbdServer::new(provider, ServerConfig::default())
        .serve(listener, rx)
        .await
}
