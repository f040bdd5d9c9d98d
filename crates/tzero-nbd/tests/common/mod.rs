//! Shared test harness: a server on 127.0.0.1:0 over [`MemProvider`] and a
//! minimal hand-written NBD client for raw-protocol tests.
#![allow(dead_code)]

pub mod certs;
mod tools;

#[allow(unused_imports)] // not every test binary drives real clients
pub use tools::have;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tzero_nbd::mem::{MemDevice, MemProvider};
use tzero_nbd::wire::{self, Request};
use tzero_nbd::{NbdServer, ServerConfig};

pub const MIB: usize = 1024 * 1024;

pub struct Harness {
    pub addr: SocketAddr,
    pub provider: Arc<MemProvider>,
    pub stop: watch::Sender<bool>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Harness {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn uri(&self, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{}", self.port(), export)
    }

    pub fn dev(&self, name: &str) -> Arc<MemDevice> {
        self.provider.device(name).expect("export exists")
    }

    /// Signals shutdown and waits (bounded) for `serve` to return.
    pub async fn shutdown(self) {
        self.stop.send(true).expect("server alive");
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("serve returned in time")
            .expect("serve task joined")
            .expect("serve ok");
    }
}

/// Exports: "disk" (4 MiB, rw, described), "ro" (1 MiB, read-only),
/// "big" (`big_size` bytes, rw).
pub async fn start_with(cfg: ServerConfig, big_size: usize) -> Harness {
    let provider = Arc::new(MemProvider::new());
    provider.insert(
        "disk",
        Arc::new(MemDevice::new(4 * MIB, 65536)),
        Some("test disk"),
    );
    let ro = Arc::new(MemDevice::new(MIB, 4096));
    ro.set_read_only(true);
    provider.insert("ro", ro, None);
    provider.insert("big", Arc::new(MemDevice::new(big_size, 4096)), None);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, rx) = watch::channel(false);
    let server = NbdServer::new(Arc::clone(&provider) as _, cfg);
    let task = tokio::spawn(async move { server.serve(listener, rx).await });
    Harness {
        addr,
        provider,
        stop,
        task,
    }
}

pub async fn start() -> Harness {
    start_with(ServerConfig::default(), 16 * MIB).await
}

/// Runs a command with a timeout, returning (success, stdout, stderr).
pub async fn run(cmd: &str, args: &[&str]) -> (bool, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(cmd)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{cmd} timed out"))
    .unwrap_or_else(|e| panic!("spawning {cmd}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A bare-bones NBD client speaking raw bytes.
pub struct Client {
    pub s: TcpStream,
}

pub struct OptReply {
    pub option: u32,
    pub reply: u32,
    pub data: Vec<u8>,
}

pub struct Chunk {
    pub flags: u16,
    pub ty: u16,
    pub cookie: u64,
    pub payload: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Self { s }
    }

    /// Reads the greeting and sends `client_flags`.
    pub async fn greet(addr: SocketAddr, client_flags: u32) -> Self {
        Self::try_greet(addr, client_flags)
            .await
            .expect("greeting: the server closed the connection")
    }

    /// [`Client::greet`], or `None` if the server closes the connection
    /// before its greeting, as it does to one over `max_connections`.
    pub async fn try_greet(addr: SocketAddr, client_flags: u32) -> Option<Self> {
        let mut c = Self::connect(addr).await;
        let mut g = [0u8; 18];
        c.s.read_exact(&mut g).await.ok()?;
        assert_eq!(&g[..8], b"NBDMAGIC");
        assert_eq!(&g[8..16], b"IHAVEOPT");
        assert_eq!(u16::from_be_bytes([g[16], g[17]]), 3);
        c.s.write_all(&client_flags.to_be_bytes())
            .await
            .expect("flags");
        Some(c)
    }

    pub async fn fixed(addr: SocketAddr) -> Self {
        Self::greet(addr, wire::FLAG_C_FIXED_NEWSTYLE | wire::FLAG_C_NO_ZEROES).await
    }

    pub async fn send_opt(&mut self, option: u32, payload: &[u8]) {
        let mut v = wire::IHAVEOPT.to_be_bytes().to_vec();
        v.extend_from_slice(&option.to_be_bytes());
        v.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        v.extend_from_slice(payload);
        self.s.write_all(&v).await.expect("send option");
    }

    pub async fn opt_reply(&mut self) -> OptReply {
        let mut h = [0u8; 20];
        self.s
            .read_exact(&mut h)
            .await
            .expect("option reply header");
        assert_eq!(&h[..8], &wire::OPT_REPLY_MAGIC.to_be_bytes());
        let option = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let reply = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut data = vec![0u8; len as usize];
        self.s
            .read_exact(&mut data)
            .await
            .expect("option reply data");
        OptReply {
            option,
            reply,
            data,
        }
    }

    /// Sends an option and returns every reply up to the final one.
    pub async fn opt(&mut self, option: u32, payload: &[u8]) -> Vec<OptReply> {
        self.send_opt(option, payload).await;
        let mut out = Vec::new();
        loop {
            let r = self.opt_reply().await;
            assert_eq!(r.option, option);
            let fin = r.reply == wire::REP_ACK || r.reply & 0x8000_0000 != 0;
            out.push(r);
            if fin {
                return out;
            }
        }
    }

    pub fn info_payload(name: &str, items: &[u16]) -> Vec<u8> {
        let mut p = u32::try_from(name.len()).unwrap().to_be_bytes().to_vec();
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&u16::try_from(items.len()).unwrap().to_be_bytes());
        for i in items {
            p.extend_from_slice(&i.to_be_bytes());
        }
        p
    }

    pub fn meta_payload(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut p = u32::try_from(name.len()).unwrap().to_be_bytes().to_vec();
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&u32::try_from(queries.len()).unwrap().to_be_bytes());
        for q in queries {
            p.extend_from_slice(&u32::try_from(q.len()).unwrap().to_be_bytes());
            p.extend_from_slice(q.as_bytes());
        }
        p
    }

    /// NBD_OPT_GO; returns (size, transmission flags).
    pub async fn go(&mut self, name: &str) -> (u64, u16) {
        let replies = self.opt(wire::OPT_GO, &Self::info_payload(name, &[])).await;
        assert_eq!(replies.last().unwrap().reply, wire::REP_ACK, "GO failed");
        let export = replies
            .iter()
            .find(|r| r.reply == wire::REP_INFO && r.data[..2] == [0, 0])
            .expect("INFO_EXPORT");
        let size = u64::from_be_bytes(export.data[2..10].try_into().unwrap());
        let flags = u16::from_be_bytes(export.data[10..12].try_into().unwrap());
        (size, flags)
    }

    /// A fully negotiated client; `structured` also selects base:allocation.
    pub async fn open(addr: SocketAddr, name: &str, structured: bool) -> (Self, u64, u16) {
        let mut c = Self::fixed(addr).await;
        if structured {
            let r = c.opt(wire::OPT_STRUCTURED_REPLY, &[]).await;
            assert_eq!(r[0].reply, wire::REP_ACK);
            let r = c
                .opt(
                    wire::OPT_SET_META_CONTEXT,
                    &Self::meta_payload(name, &["base:allocation"]),
                )
                .await;
            assert_eq!(r[0].reply, wire::REP_META_CONTEXT);
            assert_eq!(r.last().unwrap().reply, wire::REP_ACK);
        }
        let (size, flags) = c.go(name).await;
        (c, size, flags)
    }

    pub async fn request(
        &mut self,
        command: u16,
        flags: u16,
        cookie: u64,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) {
        let mut v = wire::encode_request(&Request {
            flags,
            command,
            cookie,
            offset,
            length,
        })
        .to_vec();
        v.extend_from_slice(payload);
        self.s.write_all(&v).await.expect("send request");
    }

    /// Reads a simple reply header: (error, cookie).
    pub async fn simple(&mut self) -> (u32, u64) {
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).await.expect("simple reply");
        assert_eq!(&h[..4], &wire::SIMPLE_REPLY_MAGIC.to_be_bytes());
        (
            u32::from_be_bytes(h[4..8].try_into().unwrap()),
            u64::from_be_bytes(h[8..16].try_into().unwrap()),
        )
    }

    /// Reads one reply of either kind; for a simple reply `payload` is empty
    /// and `ty` is 0xffff, with the error in `flags`' place returned as
    /// (error, cookie) via [`Client::any_reply`].
    pub async fn chunk(&mut self) -> Chunk {
        let mut h = [0u8; 20];
        self.s.read_exact(&mut h).await.expect("chunk header");
        assert_eq!(&h[..4], &wire::STRUCTURED_REPLY_MAGIC.to_be_bytes());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut payload = vec![0u8; len as usize];
        self.s
            .read_exact(&mut payload)
            .await
            .expect("chunk payload");
        Chunk {
            flags: u16::from_be_bytes([h[4], h[5]]),
            ty: u16::from_be_bytes([h[6], h[7]]),
            cookie: u64::from_be_bytes(h[8..16].try_into().unwrap()),
            payload,
        }
    }

    /// Reads one reply (simple or structured chunk) returning
    /// (cookie, error, structured payload).
    pub async fn any_reply(&mut self) -> (u64, u32, Option<Chunk>) {
        let mut m = [0u8; 4];
        self.s.read_exact(&mut m).await.expect("reply magic");
        let magic = u32::from_be_bytes(m);
        if magic == wire::SIMPLE_REPLY_MAGIC {
            let mut h = [0u8; 12];
            self.s.read_exact(&mut h).await.expect("simple rest");
            let err = u32::from_be_bytes(h[..4].try_into().unwrap());
            let cookie = u64::from_be_bytes(h[4..12].try_into().unwrap());
            return (cookie, err, None);
        }
        assert_eq!(magic, wire::STRUCTURED_REPLY_MAGIC);
        let mut h = [0u8; 16];
        self.s.read_exact(&mut h).await.expect("chunk rest");
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let mut payload = vec![0u8; len as usize];
        self.s
            .read_exact(&mut payload)
            .await
            .expect("chunk payload");
        let c = Chunk {
            flags: u16::from_be_bytes([h[0], h[1]]),
            ty: u16::from_be_bytes([h[2], h[3]]),
            cookie: u64::from_be_bytes(h[4..12].try_into().unwrap()),
            payload,
        };
        let err = if c.ty & 0x8000 != 0 {
            u32::from_be_bytes(c.payload[..4].try_into().unwrap())
        } else {
            0
        };
        (c.cookie, err, Some(c))
    }

    /// Simple-reply read of `len` bytes at `offset`.
    pub async fn read_simple(&mut self, offset: u64, len: u32) -> Vec<u8> {
        self.request(wire::CMD_READ, 0, 77, offset, len, &[]).await;
        let (err, cookie) = self.simple().await;
        assert_eq!((err, cookie), (0, 77));
        let mut data = vec![0u8; len as usize];
        self.s.read_exact(&mut data).await.expect("read data");
        data
    }

    /// True once the server has closed the connection (EOF or reset),
    /// within a deadline.
    pub async fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 256];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.s.read(&mut b)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
            }
        }
    }
}

/// A fresh, well-behaved client can still write and read back data.
///
/// The server frees a closed connection's slot in that connection's task,
/// some time after the close; so admission is polled, with a deadline,
/// rather than assumed after a sleep.
pub async fn assert_healthy(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let flags = wire::FLAG_C_FIXED_NEWSTYLE | wire::FLAG_C_NO_ZEROES;
    let mut c = loop {
        if let Some(c) = Client::try_greet(addr, flags).await {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server admits no new connection after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (size, _) = c.go("disk").await;
    assert_eq!(size, 4 * MIB as u64);
    let data = vec![0x5au8; 4096];
    c.request(wire::CMD_WRITE, 0, 1, 8192, 4096, &data).await;
    assert_eq!(c.simple().await, (0, 1));
    assert_eq!(c.read_simple(8192, 4096).await, data);
    c.request(wire::CMD_DISC, 0, 2, 0, 0, &[]).await;
    assert!(c.closed_by_server().await);
}
