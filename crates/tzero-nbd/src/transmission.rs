//! The transmission phase: a reader loop that parses and validates requests
//! and hands each one to tokio's blocking pool, and a writer loop that sends
//! finished replies in whatever order they complete.
//!
//! Every reply is encoded as one contiguous frame (header and payload in the
//! same buffer), so replies can never interleave on the wire, and the writer
//! coalesces whatever is queued before each flush. Two semaphores bound the
//! requests and payload bytes in flight per connection; their permits travel
//! with the reply and are released only once it has been written, so a
//! client that stops reading stalls its own connection, not the server.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter,
};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, trace};

use crate::device::{nbd_errno, BlockDevice, DeviceError};
use crate::error::ConnError;
use crate::handshake::{self, Negotiated};
use crate::request::{check_request, Checked, Op, SessionCaps};
use crate::server::{wait_shutdown, ServerConfig};
use crate::wire;

/// Socket buffer sizes: large enough to batch many small replies into one
/// syscall, small enough that 1 MiB payloads bypass the copy.
const IO_BUF: usize = 128 * 1024;
/// Prefix reserved in a read buffer for the reply header: the structured
/// chunk header plus the 8-byte offset of `OFFSET_DATA`.
const READ_PREFIX_STRUCTURED: usize = wire::STRUCTURED_HEADER_LEN + 8;
/// Upper bound on descriptors per block-status reply.
const MAX_DESCRIPTORS: usize = 1 << 16;

/// Reusable payload buffers, so steady-state I/O does not allocate.
struct BufPool {
    bufs: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    const KEEP: usize = 64;
    const MAX_KEPT_CAPACITY: usize = 4 * 1024 * 1024 + 64;

    fn get(&self, len: usize) -> Vec<u8> {
        let mut v = self
            .bufs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        // Only the part beyond the previous length gets zero-filled.
        v.resize(len, 0);
        v
    }

    fn put(&self, v: Vec<u8>) {
        if v.capacity() > Self::MAX_KEPT_CAPACITY {
            return;
        }
        let mut bufs = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        if bufs.len() < Self::KEEP {
            bufs.push(v);
        }
    }
}

/// One encoded reply. Small ones live inline to avoid an allocation.
enum Frame {
    Small { buf: [u8; 32], len: usize },
    Buf(Vec<u8>),
}

impl Frame {
    fn simple(errno: u32, cookie: u64) -> Self {
        let mut buf = [0u8; 32];
        wire::put_simple_reply(&mut buf, errno, cookie);
        Frame::Small {
            buf,
            len: wire::SIMPLE_REPLY_LEN,
        }
    }

    fn structured_done(cookie: u64) -> Self {
        let mut buf = [0u8; 32];
        wire::put_structured_header(
            &mut buf,
            wire::REPLY_FLAG_DONE,
            wire::REPLY_TYPE_NONE,
            cookie,
            0,
        );
        Frame::Small {
            buf,
            len: wire::STRUCTURED_HEADER_LEN,
        }
    }

    /// The success reply for a command without payload. A simple reply is
    /// valid even in structured sessions and is the shortest frame.
    fn ok(cookie: u64) -> Self {
        Self::simple(0, cookie)
    }

    /// An error reply; structured sessions get a message with it.
    fn error(structured: bool, cookie: u64, errno: u32, msg: &str) -> Self {
        if structured {
            let mut v = Vec::with_capacity(32 + msg.len());
            wire::encode_structured_error(&mut v, cookie, errno, msg);
            Frame::Buf(v)
        } else {
            Self::simple(errno, cookie)
        }
    }
}

/// A frame plus the backpressure permits it holds until written.
struct Reply {
    frame: Frame,
    _count: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// State shared by the reader and the blocking workers.
struct Shared {
    device: Arc<dyn BlockDevice>,
    pool: BufPool,
    caps: SessionCaps,
}

/// Why the reader stopped.
#[derive(Debug)]
enum End {
    Disconnect,
    Eof,
    Shutdown,
    /// The device was taken away (`BlockDevice::revoked`).
    Revoked,
}

/// Runs the transmission phase until the client disconnects, the server
/// shuts down or the connection fails. In-flight requests are always
/// answered before the socket is closed (if it still works).
pub(crate) async fn run<R, W>(
    mut reader: BufReader<R>,
    writer: W,
    neg: Negotiated,
    cfg: &ServerConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    debug!(export = %neg.export, caps = ?neg.caps, "entering transmission");
    let shared = Arc::new(Shared {
        device: neg.device,
        pool: BufPool {
            bufs: Mutex::new(Vec::new()),
        },
        caps: neg.caps,
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let writer_fut = write_loop(
        BufWriter::with_capacity(IO_BUF, writer),
        rx,
        Arc::clone(&shared),
        cfg.request_timeout,
    );
    tokio::pin!(writer_fut);
    let reader_fut = read_loop(&mut reader, &shared, cfg, tx, shutdown);
    tokio::select! {
        r = reader_fut => {
            // The reader dropped its sender; the writer finishes once every
            // in-flight request has replied.
            let w = writer_fut.await;
            let end = r?;
            debug!(?end, "transmission ended");
            w.map_err(ConnError::from)
        }
        w = &mut writer_fut => {
            // The writer only stops early when the socket failed.
            w?;
            Err(ConnError::Io(io::ErrorKind::BrokenPipe.into()))
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: BufWriter<W>,
    mut rx: mpsc::UnboundedReceiver<Reply>,
    shared: Arc<Shared>,
    stall: Duration,
) -> io::Result<()> {
    let stalled = || io::Error::new(io::ErrorKind::TimedOut, "client stopped reading replies");
    while let Some(reply) = rx.recv().await {
        // Coalesce everything already queued into as few syscalls as the
        // buffer allows, then flush. A client that stops reading for longer
        // than `stall` is dropped rather than pinning the connection forever.
        let batch = async {
            write_one(&mut w, reply, &shared).await?;
            while let Ok(reply) = rx.try_recv() {
                write_one(&mut w, reply, &shared).await?;
            }
            w.flush().await
        };
        tokio::time::timeout(stall, batch)
            .await
            .map_err(|_| stalled())??;
    }
    // Best effort: the client may already have closed its side.
    let _ = tokio::time::timeout(stall, w.shutdown()).await;
    Ok(())
}

async fn write_one<W: AsyncWrite + Unpin>(
    w: &mut BufWriter<W>,
    reply: Reply,
    shared: &Shared,
) -> io::Result<()> {
    match reply.frame {
        Frame::Small { buf, len } => w.write_all(&buf[..len]).await,
        Frame::Buf(v) => {
            let r = w.write_all(&v).await;
            shared.pool.put(v);
            r
        }
    }
}

/// Waits for the first byte of the next request (honouring the idle
/// timeout), returning false on a clean EOF.
async fn wait_for_request<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    idle: Option<Duration>,
) -> Result<bool, ConnError> {
    let fill = async { Ok::<bool, io::Error>(!r.fill_buf().await?.is_empty()) };
    match idle {
        None => Ok(fill.await?),
        Some(t) => Ok(tokio::time::timeout(t, fill)
            .await
            .map_err(|_| ConnError::Timeout("idle wait"))??),
    }
}

/// Resolves once the device is revoked; never for a device that cannot be.
async fn wait_revoked(revoked: &mut Option<watch::Receiver<bool>>) {
    match revoked {
        Some(rx) => wait_shutdown(rx).await,
        None => std::future::pending().await,
    }
}

/// Runs `fut` under the request-body timeout.
async fn timed<T>(
    t: Duration,
    what: &'static str,
    fut: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T, ConnError> {
    Ok(tokio::time::timeout(t, fut)
        .await
        .map_err(|_| ConnError::Timeout(what))??)
}

async fn read_loop<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    shared: &Arc<Shared>,
    cfg: &ServerConfig,
    tx: mpsc::UnboundedSender<Reply>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<End, ConnError> {
    let count_sem = Arc::new(Semaphore::new(cfg.max_inflight_requests.max(1)));
    // A single maximal payload must always fit, or it could never start.
    let byte_budget = u32::try_from(cfg.max_inflight_bytes)
        .unwrap_or(u32::MAX)
        .max(wire::MAX_PAYLOAD);
    let bytes_sem = Arc::new(Semaphore::new(byte_budget as usize));
    let max_discard = u32::try_from(cfg.max_discard_len).unwrap_or(u32::MAX);
    let structured = shared.caps.structured;
    let mut hdr = [0u8; wire::REQUEST_HEADER_LEN];
    let mut revoked = shared.device.revoked();

    loop {
        let more = tokio::select! {
            biased;
            () = wait_shutdown(&mut shutdown) => return Ok(End::Shutdown),
            () = wait_revoked(&mut revoked) => {
                debug!("export revoked: closing after the requests in flight");
                return Ok(End::Revoked);
            }
            more = wait_for_request(r, cfg.idle_timeout) => more?,
        };
        if !more {
            return Ok(End::Eof);
        }
        timed(
            cfg.request_timeout,
            "request header",
            r.read_exact(&mut hdr),
        )
        .await?;
        let req = wire::parse_request(&hdr).map_err(|e| ConnError::Protocol(e.to_string()))?;
        trace!(?req, "request");

        let count = Arc::clone(&count_sem)
            .acquire_owned()
            .await
            .map_err(|_| ConnError::Protocol("semaphore closed".into()))?;

        let op = match check_request(&req, &shared.caps, max_discard) {
            Checked::Run(Op::Disconnect) => return Ok(End::Disconnect),
            Checked::Fatal => {
                return Err(ConnError::Protocol(format!(
                    "write payload of {} bytes too large to skip",
                    req.length
                )))
            }
            Checked::Reject { errno, discard } => {
                if discard > 0 {
                    timed(
                        cfg.request_timeout,
                        "discarding payload",
                        discard_io(r, u64::from(discard)),
                    )
                    .await?;
                }
                debug!(?req, errno, "rejecting request");
                let frame = Frame::error(structured, req.cookie, errno, "invalid request");
                let _ = tx.send(Reply {
                    frame,
                    _count: count,
                    _bytes: None,
                });
                continue;
            }
            Checked::Run(op) => op,
        };

        let need = op.buffer_bytes();
        let bytes = if need > 0 {
            Some(
                Arc::clone(&bytes_sem)
                    .acquire_many_owned(need)
                    .await
                    .map_err(|_| ConnError::Protocol("semaphore closed".into()))?,
            )
        } else {
            None
        };

        let payload = if let Op::Write { len, .. } = op {
            let mut buf = shared.pool.get(len as usize);
            timed(cfg.request_timeout, "write payload", r.read_exact(&mut buf)).await?;
            Some(buf)
        } else {
            None
        };

        let shared2 = Arc::clone(shared);
        let tx2 = tx.clone();
        let cookie = req.cookie;
        tokio::task::spawn_blocking(move || {
            let frame =
                match catch_unwind(AssertUnwindSafe(|| execute(&shared2, op, cookie, payload))) {
                    Ok(f) => f,
                    Err(_) => Frame::error(
                        shared2.caps.structured,
                        cookie,
                        wire::EIO,
                        "device panicked",
                    ),
                };
            // The writer may be gone if the socket failed; nothing to do.
            let _ = tx2.send(Reply {
                frame,
                _count: count,
                _bytes: bytes,
            });
        });
    }
}

async fn discard_io<R: AsyncRead + Unpin>(r: &mut BufReader<R>, n: u64) -> io::Result<()> {
    handshake::discard(r, n).await.map_err(|e| match e {
        ConnError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    })
}

/// Performs one operation on the device (on a blocking thread) and encodes
/// its reply.
fn execute(sh: &Shared, op: Op, cookie: u64, payload: Option<Vec<u8>>) -> Frame {
    let dev = &*sh.device;
    let structured = sh.caps.structured;
    let done = |res: Result<(), DeviceError>| match res {
        Ok(()) => Frame::ok(cookie),
        Err(e) => Frame::error(structured, cookie, nbd_errno(e), &e.to_string()),
    };
    match op {
        Op::Read { offset, len } => read(sh, offset, len, cookie),
        Op::Write { offset, fua, .. } => {
            let data = payload.unwrap_or_default();
            let res = if data.is_empty() {
                Ok(())
            } else {
                dev.write(offset, &data, fua)
            };
            sh.pool.put(data);
            done(res)
        }
        Op::Flush => done(dev.flush()),
        // Trim and cache are hints: a device that cannot honour them has
        // still done everything the client may rely on.
        Op::Trim { offset, len, fua } => done(advisory(nonzero(len, || {
            dev.trim(offset, u64::from(len), fua)
        }))),
        Op::Cache { offset, len } => {
            done(advisory(nonzero(len, || dev.cache(offset, u64::from(len)))))
        }
        Op::WriteZeroes {
            offset,
            len,
            no_hole,
            fua,
            fast,
        } => done(nonzero(len, || {
            if fast {
                dev.write_zeroes_fast(offset, u64::from(len), no_hole, fua)
            } else {
                dev.write_zeroes(offset, u64::from(len), no_hole, fua)
            }
        })),
        Op::BlockStatus {
            offset,
            len,
            req_one,
            context,
        } => block_status(dev, offset, len, req_one, context, cookie),
        // Handled by the reader; never dispatched.
        Op::Disconnect => Frame::ok(cookie),
    }
}

/// Treats `NotSupported` as success for advisory commands (the spec
/// reserves `ENOTSUP` for FAST_ZERO).
fn advisory(r: Result<(), DeviceError>) -> Result<(), DeviceError> {
    match r {
        Err(DeviceError::NotSupported) => Ok(()),
        other => other,
    }
}

/// Zero-length requests are accepted as no-ops without bothering the device.
fn nonzero(len: u32, f: impl FnOnce() -> Result<(), DeviceError>) -> Result<(), DeviceError> {
    if len == 0 {
        Ok(())
    } else {
        f()
    }
}

/// READ: the device fills the buffer after a reserved header prefix so the
/// reply goes out as one contiguous write.
fn read(sh: &Shared, offset: u64, len: u32, cookie: u64) -> Frame {
    let structured = sh.caps.structured;
    if len == 0 {
        return if structured {
            Frame::structured_done(cookie)
        } else {
            Frame::simple(0, cookie)
        };
    }
    let prefix = if structured {
        READ_PREFIX_STRUCTURED
    } else {
        wire::SIMPLE_REPLY_LEN
    };
    let n = len as usize;
    let mut buf = sh.pool.get(prefix + n);
    match sh.device.read(offset, &mut buf[prefix..]) {
        Ok(()) => {
            if structured {
                // One OFFSET_DATA chunk covers the whole request (≤ 32 MiB),
                // so NBD_CMD_FLAG_DF is honoured by construction.
                wire::put_structured_header(
                    &mut buf,
                    wire::REPLY_FLAG_DONE,
                    wire::REPLY_TYPE_OFFSET_DATA,
                    cookie,
                    len + 8,
                );
                buf[wire::STRUCTURED_HEADER_LEN..prefix].copy_from_slice(&offset.to_be_bytes());
            } else {
                wire::put_simple_reply(&mut buf, 0, cookie);
            }
            Frame::Buf(buf)
        }
        Err(e) => {
            sh.pool.put(buf);
            Frame::error(structured, cookie, nbd_errno(e), &e.to_string())
        }
    }
}

/// BLOCK_STATUS for `base:allocation`: clamp the device's extents to the
/// request and encode them as one chunk.
fn block_status(
    dev: &dyn BlockDevice,
    offset: u64,
    len: u32,
    req_one: bool,
    context: u32,
    cookie: u64,
) -> Frame {
    let extents = match dev.block_status(offset, u64::from(len)) {
        Ok(e) => e,
        Err(e) => return Frame::error(true, cookie, nbd_errno(e), &e.to_string()),
    };
    let mut descs: Vec<(u32, u32)> = Vec::with_capacity(extents.len().min(MAX_DESCRIPTORS));
    let mut left = len;
    for e in &extents {
        if left == 0 || descs.len() >= MAX_DESCRIPTORS {
            break;
        }
        let l = u32::try_from(e.length).unwrap_or(u32::MAX).min(left);
        if l == 0 {
            // A zero-length extent would be invalid on the wire; stop here.
            break;
        }
        let mut flags = 0;
        if e.hole {
            flags |= wire::STATE_HOLE;
        }
        if e.zero {
            flags |= wire::STATE_ZERO;
        }
        match descs.last_mut() {
            Some(last) if last.1 == flags => last.0 += l,
            _ => descs.push((l, flags)),
        }
        left -= l;
        if req_one {
            break;
        }
    }
    if descs.is_empty() {
        // The device gave us nothing usable; "status unknown" is always
        // a correct answer.
        descs.push((len, 0));
    }
    let mut v = Vec::with_capacity(wire::STRUCTURED_HEADER_LEN + 4 + descs.len() * 8);
    wire::encode_block_status(&mut v, cookie, context, &descs);
    Frame::Buf(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Extent;

    struct Fixed(Vec<Extent>);

    impl BlockDevice for Fixed {
        fn size(&self) -> u64 {
            1 << 30
        }
        fn preferred_block_size(&self) -> u32 {
            4096
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read(&self, _: u64, _: &mut [u8]) -> Result<(), DeviceError> {
            Err(DeviceError::Io)
        }
        fn write(&self, _: u64, _: &[u8], _: bool) -> Result<(), DeviceError> {
            Ok(())
        }
        fn flush(&self) -> Result<(), DeviceError> {
            Ok(())
        }
        fn trim(&self, _: u64, _: u64, _: bool) -> Result<(), DeviceError> {
            Ok(())
        }
        fn write_zeroes(&self, _: u64, _: u64, _: bool, _: bool) -> Result<(), DeviceError> {
            Ok(())
        }
        fn block_status(&self, _: u64, _: u64) -> Result<Vec<Extent>, DeviceError> {
            Ok(self.0.clone())
        }
    }

    fn descs(frame: Frame) -> Vec<(u32, u32)> {
        let Frame::Buf(v) = frame else {
            panic!("expected buffer frame")
        };
        v[24..]
            .chunks(8)
            .map(|c| {
                (
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                )
            })
            .collect()
    }

    fn ext(length: u64, hole: bool) -> Extent {
        Extent {
            length,
            hole,
            zero: hole,
        }
    }

    #[test]
    fn block_status_clamps_merges_and_req_one() {
        let d = Fixed(vec![ext(4096, true), ext(4096, true), ext(1 << 40, false)]);
        assert_eq!(
            descs(block_status(&d, 0, 16384, false, 1, 7)),
            vec![(8192, 3), (8192, 0)]
        );
        assert_eq!(
            descs(block_status(&d, 0, 16384, true, 1, 7)),
            vec![(4096, 3)]
        );
        let empty = Fixed(vec![ext(0, true)]);
        assert_eq!(
            descs(block_status(&empty, 0, 512, false, 1, 7)),
            vec![(512, 0)]
        );
    }

    #[test]
    fn read_error_is_reported_not_sent_as_data() {
        let sh = Shared {
            device: Arc::new(Fixed(vec![])),
            pool: BufPool {
                bufs: Mutex::new(Vec::new()),
            },
            caps: SessionCaps {
                size: 1 << 30,
                read_only: false,
                structured: false,
                base_allocation: None,
            },
        };
        match read(&sh, 0, 4096, 9) {
            Frame::Small { buf, len } => {
                assert_eq!(len, 16);
                assert_eq!(&buf[4..8], &wire::EIO.to_be_bytes());
            }
            Frame::Buf(_) => panic!("error reply must not carry data"),
        }
    }
}
