//! Validation of transmission requests: turns a parsed header into either an
//! operation for the device or an error number, without touching any I/O.
//!
//! Kept pure so the rules (flags per command, bounds, read-only, payload
//! limits) are unit-tested and fuzzed directly. Error numbers follow the
//! spec text: `EINVAL` for unknown commands/flags and reads, trims, caches or
//! block-status queries beyond the end; `ENOSPC` for writes beyond the end;
//! `EPERM` for writes to a read-only export.

use crate::wire::{self, Request};

/// What the session negotiated; fixed for the life of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCaps {
    /// Export size seen at connect time.
    pub size: u64,
    /// `NBD_FLAG_READ_ONLY` was advertised.
    pub read_only: bool,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// Context id of `base:allocation`, if it was selected for this export.
    pub base_allocation: Option<u32>,
}

/// A validated operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read {
        offset: u64,
        len: u32,
    },
    /// `len` payload bytes follow the header.
    Write {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        len: u32,
        fua: bool,
    },
    Cache {
        offset: u64,
        len: u32,
    },
    WriteZeroes {
        offset: u64,
        len: u32,
        no_hole: bool,
        fua: bool,
        fast: bool,
    },
    BlockStatus {
        offset: u64,
        len: u32,
        req_one: bool,
        context: u32,
    },
    Disconnect,
}

impl Op {
    /// Bytes of memory the operation holds while in flight (payload in or
    /// out), used for per-connection backpressure.
    pub fn buffer_bytes(&self) -> u32 {
        match *self {
            Op::Read { len, .. } | Op::Write { len, .. } => len,
            _ => 0,
        }
    }
}

/// The outcome of validating one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Run it.
    Run(Op),
    /// Answer with this error; first read and drop `discard` payload bytes
    /// so the stream stays in sync.
    Reject { errno: u32, discard: u32 },
    /// The request cannot be answered without losing sync (a write payload
    /// too large to skip): drop the connection.
    Fatal,
}

const FUA: u16 = wire::CMD_FLAG_FUA;

/// Validates `req` against the session. `max_discard` is the largest
/// rejected write payload we are willing to read and throw away.
pub fn check_request(req: &Request, caps: &SessionCaps, max_discard: u32) -> Checked {
    let Request {
        flags,
        command,
        offset,
        length: len,
        ..
    } = *req;

    // A rejected WRITE still has its payload on the wire.
    let discard = if command == wire::CMD_WRITE { len } else { 0 };
    if discard > max_discard {
        return Checked::Fatal;
    }
    let reject = |errno| Checked::Reject { errno, discard };

    let allowed = match command {
        wire::CMD_READ => {
            if caps.structured {
                FUA | wire::CMD_FLAG_DF
            } else {
                FUA
            }
        }
        wire::CMD_WRITE | wire::CMD_FLUSH | wire::CMD_TRIM | wire::CMD_CACHE => FUA,
        wire::CMD_WRITE_ZEROES => FUA | wire::CMD_FLAG_NO_HOLE | wire::CMD_FLAG_FAST_ZERO,
        wire::CMD_BLOCK_STATUS => FUA | wire::CMD_FLAG_REQ_ONE,
        // The client promises to send nothing more; flags are irrelevant.
        wire::CMD_DISC => return Checked::Run(Op::Disconnect),
        _ => return reject(wire::EINVAL),
    };
    if flags & !allowed != 0 {
        return reject(wire::EINVAL);
    }
    let fua = flags & FUA != 0;

    // Flush's offset and length are reserved; tolerate junk there.
    if command == wire::CMD_FLUSH {
        return Checked::Run(Op::Flush);
    }

    let writes = matches!(
        command,
        wire::CMD_WRITE | wire::CMD_TRIM | wire::CMD_WRITE_ZEROES
    );
    if writes && caps.read_only {
        return reject(wire::EPERM);
    }

    if matches!(command, wire::CMD_READ | wire::CMD_WRITE) && len > wire::MAX_PAYLOAD {
        return reject(wire::EINVAL);
    }

    let in_range = offset
        .checked_add(u64::from(len))
        .is_some_and(|end| end <= caps.size);
    if !in_range {
        let beyond_end = if matches!(command, wire::CMD_WRITE | wire::CMD_WRITE_ZEROES) {
            wire::ENOSPC
        } else {
            wire::EINVAL
        };
        return reject(beyond_end);
    }

    let op = match command {
        wire::CMD_READ => Op::Read { offset, len },
        wire::CMD_WRITE => Op::Write { offset, len, fua },
        wire::CMD_TRIM => Op::Trim { offset, len, fua },
        wire::CMD_CACHE => Op::Cache { offset, len },
        wire::CMD_WRITE_ZEROES => Op::WriteZeroes {
            offset,
            len,
            fua,
            no_hole: flags & wire::CMD_FLAG_NO_HOLE != 0,
            fast: flags & wire::CMD_FLAG_FAST_ZERO != 0,
        },
        wire::CMD_BLOCK_STATUS => {
            let Some(context) = caps.base_allocation else {
                return reject(wire::EINVAL);
            };
            // A descriptor must have a nonzero length, so an empty query
            // has no valid answer.
            if len == 0 {
                return reject(wire::EINVAL);
            }
            Op::BlockStatus {
                offset,
                len,
                context,
                req_one: flags & wire::CMD_FLAG_REQ_ONE != 0,
            }
        }
        _ => return reject(wire::EINVAL),
    };
    Checked::Run(op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    const CAPS: SessionCaps = SessionCaps {
        size: 1 << 20,
        read_only: false,
        structured: true,
        base_allocation: Some(1),
    };

    fn req(command: u16, flags: u16, offset: u64, length: u32) -> Request {
        Request {
            flags,
            command,
            cookie: 1,
            offset,
            length,
        }
    }

    fn check(r: Request) -> Checked {
        check_request(&r, &CAPS, 64 << 20)
    }

    fn rej(errno: u32, discard: u32) -> Checked {
        Checked::Reject { errno, discard }
    }

    #[test]
    fn valid_ops() {
        assert_eq!(
            check(req(CMD_READ, CMD_FLAG_DF, 0, 4096)),
            Checked::Run(Op::Read {
                offset: 0,
                len: 4096
            })
        );
        assert_eq!(
            check(req(CMD_WRITE, CMD_FLAG_FUA, 512, 1000)),
            Checked::Run(Op::Write {
                offset: 512,
                len: 1000,
                fua: true
            })
        );
        assert_eq!(
            check(req(
                CMD_WRITE_ZEROES,
                CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO,
                0,
                1 << 20
            )),
            Checked::Run(Op::WriteZeroes {
                offset: 0,
                len: 1 << 20,
                no_hole: true,
                fua: false,
                fast: true
            })
        );
        assert_eq!(check(req(CMD_FLUSH, 0, 99, 99)), Checked::Run(Op::Flush));
        assert_eq!(check(req(CMD_DISC, 0, 0, 0)), Checked::Run(Op::Disconnect));
        assert_eq!(
            check(req(CMD_BLOCK_STATUS, CMD_FLAG_REQ_ONE, 0, 1 << 20)),
            Checked::Run(Op::BlockStatus {
                offset: 0,
                len: 1 << 20,
                req_one: true,
                context: 1
            })
        );
        // zero length is a no-op, not an error
        assert_eq!(
            check(req(CMD_READ, 0, 1 << 20, 0)),
            Checked::Run(Op::Read {
                offset: 1 << 20,
                len: 0
            })
        );
    }

    #[test]
    fn unknown_command_and_flags() {
        assert_eq!(check(req(99, 0, 0, 0)), rej(EINVAL, 0));
        assert_eq!(check(req(CMD_READ, CMD_FLAG_NO_HOLE, 0, 1)), rej(EINVAL, 0));
        assert_eq!(check(req(CMD_WRITE, CMD_FLAG_DF, 0, 10)), rej(EINVAL, 10));
        assert_eq!(check(req(CMD_TRIM, 0x8000, 0, 10)), rej(EINVAL, 0));
        // DF without structured replies is not allowed
        let caps = SessionCaps {
            structured: false,
            ..CAPS
        };
        assert_eq!(
            check_request(&req(CMD_READ, CMD_FLAG_DF, 0, 1), &caps, 0),
            rej(EINVAL, 0)
        );
    }

    #[test]
    fn bounds() {
        assert_eq!(check(req(CMD_READ, 0, (1 << 20) - 1, 2)), rej(EINVAL, 0));
        assert_eq!(check(req(CMD_READ, 0, u64::MAX, 2)), rej(EINVAL, 0));
        assert_eq!(check(req(CMD_WRITE, 0, (1 << 20) - 1, 2)), rej(ENOSPC, 2));
        assert_eq!(check(req(CMD_WRITE_ZEROES, 0, u64::MAX, 1)), rej(ENOSPC, 0));
        assert_eq!(check(req(CMD_TRIM, 0, 1 << 21, 1)), rej(EINVAL, 0));
        assert_eq!(check(req(CMD_CACHE, 0, 1 << 21, 1)), rej(EINVAL, 0));
        assert_eq!(check(req(CMD_BLOCK_STATUS, 0, 1 << 21, 1)), rej(EINVAL, 0));
        assert_eq!(check(req(CMD_BLOCK_STATUS, 0, 0, 0)), rej(EINVAL, 0));
    }

    #[test]
    fn payload_limits() {
        let big = MAX_PAYLOAD + 1;
        assert_eq!(check(req(CMD_READ, 0, 0, big)), rej(EINVAL, 0));
        assert_eq!(check(req(CMD_WRITE, 0, 0, big)), rej(EINVAL, big));
        assert_eq!(
            check_request(&req(CMD_WRITE, 0, 0, big), &CAPS, MAX_PAYLOAD),
            Checked::Fatal
        );
        // trims and zeroes carry no payload, so large lengths are fine
        let caps = SessionCaps {
            size: u64::MAX,
            ..CAPS
        };
        assert!(matches!(
            check_request(&req(CMD_TRIM, 0, 0, u32::MAX), &caps, 0),
            Checked::Run(_)
        ));
    }

    #[test]
    fn read_only_and_no_context() {
        let caps = SessionCaps {
            read_only: true,
            base_allocation: None,
            ..CAPS
        };
        let c = |r| check_request(&r, &caps, 1 << 30);
        assert_eq!(c(req(CMD_WRITE, 0, 0, 5)), rej(EPERM, 5));
        assert_eq!(c(req(CMD_TRIM, 0, 0, 5)), rej(EPERM, 0));
        assert_eq!(c(req(CMD_WRITE_ZEROES, 0, 0, 5)), rej(EPERM, 0));
        assert!(matches!(c(req(CMD_READ, 0, 0, 5)), Checked::Run(_)));
        assert_eq!(c(req(CMD_BLOCK_STATUS, 0, 0, 5)), rej(EINVAL, 0));
    }
}
