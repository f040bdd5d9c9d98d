//! A minimal NBD client for tests: fixed newstyle handshake with
//! `NBD_OPT_EXPORT_NAME`, then simple-reply READ, WRITE and FLUSH on a
//! blocking `TcpStream`. Enough to keep a connection open across an admin
//! change (a freeze, a write inhibit) and to issue thousands of small
//! ordered writes quickly, which spawning qemu-io per write cannot.

use std::io::{Read, Write};
use std::net::TcpStream;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const OPT_EXPORT_NAME: u32 = 1;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const CMD_READ: u16 = 0;
const CMD_WRITE: u16 = 1;
const CMD_FLUSH: u16 = 3;
/// Transmission flag: the export is read-only.
pub const FLAG_READ_ONLY: u16 = 1 << 1;

/// One NBD connection to one export.
pub struct NbdConn {
    stream: TcpStream,
    pub size: u64,
    pub flags: u16,
    cookie: u64,
}

impl NbdConn {
    pub fn connect(port: u16, export: &str) -> std::io::Result<NbdConn> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        let mut b8 = [0u8; 8];
        s.read_exact(&mut b8)?;
        assert_eq!(u64::from_be_bytes(b8), NBDMAGIC, "server magic");
        s.read_exact(&mut b8)?;
        assert_eq!(u64::from_be_bytes(b8), IHAVEOPT, "newstyle magic");
        let mut b2 = [0u8; 2];
        s.read_exact(&mut b2)?;
        let server_flags = u16::from_be_bytes(b2);
        let no_zeroes = server_flags & 2 != 0;
        // Client flags: fixed newstyle, and no zeroes if offered.
        let client_flags: u32 = 1 | if no_zeroes { 2 } else { 0 };
        let mut out = Vec::new();
        out.extend_from_slice(&client_flags.to_be_bytes());
        out.extend_from_slice(&IHAVEOPT.to_be_bytes());
        out.extend_from_slice(&OPT_EXPORT_NAME.to_be_bytes());
        let len = u32::try_from(export.len()).expect("name length");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(export.as_bytes());
        s.write_all(&out)?;
        s.read_exact(&mut b8)?;
        let size = u64::from_be_bytes(b8);
        s.read_exact(&mut b2)?;
        let flags = u16::from_be_bytes(b2);
        if !no_zeroes {
            let mut zeroes = [0u8; 124];
            s.read_exact(&mut zeroes)?;
        }
        Ok(NbdConn {
            stream: s,
            size,
            flags,
            cookie: 0,
        })
    }

    pub fn read_only(&self) -> bool {
        self.flags & FLAG_READ_ONLY != 0
    }

    fn request(&mut self, cmd: u16, offset: u64, len: u32, data: &[u8]) -> std::io::Result<u64> {
        self.cookie += 1;
        let mut out = Vec::with_capacity(28 + data.len());
        out.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&cmd.to_be_bytes());
        out.extend_from_slice(&self.cookie.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(data);
        self.stream.write_all(&out)?;
        Ok(self.cookie)
    }

    /// Reads a simple reply header; returns the NBD errno (0 = success).
    fn reply(&mut self, cookie: u64) -> std::io::Result<u32> {
        let mut h = [0u8; 16];
        self.stream.read_exact(&mut h)?;
        let magic = u32::from_be_bytes(h[0..4].try_into().expect("4 bytes"));
        assert_eq!(magic, SIMPLE_REPLY_MAGIC, "simple reply magic");
        let errno = u32::from_be_bytes(h[4..8].try_into().expect("4 bytes"));
        let got = u64::from_be_bytes(h[8..16].try_into().expect("8 bytes"));
        assert_eq!(
            got, cookie,
            "reply cookie (requests are not pipelined here)"
        );
        Ok(errno)
    }

    /// Writes and waits for the reply; returns the NBD errno (0 = ok,
    /// 1 = EPERM, 5 = EIO, 28 = ENOSPC).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<u32> {
        let len = u32::try_from(data.len()).expect("write length");
        let cookie = self.request(CMD_WRITE, offset, len, data)?;
        self.reply(cookie)
    }

    pub fn flush(&mut self) -> std::io::Result<u32> {
        let cookie = self.request(CMD_FLUSH, 0, 0, &[])?;
        self.reply(cookie)
    }

    /// Reads `len` bytes; `Err(errno)` if the server refused.
    pub fn read(&mut self, offset: u64, len: u32) -> std::io::Result<Result<Vec<u8>, u32>> {
        let cookie = self.request(CMD_READ, offset, len, &[])?;
        let errno = self.reply(cookie)?;
        if errno != 0 {
            return Ok(Err(errno));
        }
        let mut buf = vec![0u8; len as usize];
        self.stream.read_exact(&mut buf)?;
        Ok(Ok(buf))
    }

    /// Reads the whole export in 1 MiB requests.
    pub fn read_all(&mut self) -> Vec<u8> {
        let mut all = Vec::with_capacity(usize::try_from(self.size).expect("size"));
        let mut off = 0;
        while off < self.size {
            let n = u32::try_from((self.size - off).min(1 << 20)).expect("chunk");
            let chunk = self
                .read(off, n)
                .expect("NBD read")
                .unwrap_or_else(|e| panic!("NBD read at {off} failed with errno {e}"));
            all.extend_from_slice(&chunk);
            off += u64::from(n);
        }
        all
    }
}
