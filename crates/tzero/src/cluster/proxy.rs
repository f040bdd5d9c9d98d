//! A standby's listeners: every NBD or API connection is forwarded, byte for byte, to the
//! node that owns the pool (as its owner record names it, read per connection). NBD's
//! handshake, TLS and the API's token all pass through unchanged, so a client cannot tell a
//! standby from the owner, except that its connection breaks when the owner changes (clients
//! reconnect, as they do after any server restart).

use super::{lease, ClusterConfig};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tzero_rados::Pool;

/// The two forwarding listeners of a standby.
pub struct Standby {
    tasks: Vec<JoinHandle<()>>,
}

#[derive(Clone, Copy)]
enum Port {
    Nbd,
    Api,
}

impl Standby {
    /// Binds this node's NBD and API addresses and forwards what arrives.
    pub fn start(
        rt: &tokio::runtime::Runtime,
        config: &ClusterConfig,
        pool: Arc<Pool>,
    ) -> anyhow::Result<Standby> {
        let mut tasks = Vec::new();
        for (addr, port) in [(&config.nbd_addr, Port::Nbd), (&config.api_addr, Port::Api)] {
            let listener = rt
                .block_on(TcpListener::bind(addr))
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            let pool = pool.clone();
            let prefix = config.prefix.clone();
            tasks.push(rt.spawn(async move { forward_all(listener, port, pool, prefix).await }));
        }
        Ok(Standby { tasks })
    }

    /// Stops accepting and drops every forwarded connection.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn forward_all(listener: TcpListener, port: Port, pool: Arc<Pool>, prefix: String) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((client, peer)) = listener.accept().await else {
            continue;
        };
        let pool = pool.clone();
        let prefix = prefix.clone();
        // Forwarded connections live in the set, so aborting the listener drops them too.
        conns.spawn(async move {
            let owner = tokio::task::spawn_blocking(move || lease::read_owner(&pool, &prefix))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            let Some(owner) = owner else {
                tracing::warn!(%peer, "standby: no owner to forward to; closing");
                return;
            };
            let target = match port {
                Port::Nbd => owner.nbd,
                Port::Api => owner.api,
            };
            forward(client, &target).await;
        });
        while conns.try_join_next().is_some() {}
    }
}

async fn forward(mut client: TcpStream, target: &str) {
    match TcpStream::connect(target).await {
        Ok(mut upstream) => {
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
        Err(e) => tracing::warn!(target, "standby: cannot reach the owner: {e}"),
    }
}
