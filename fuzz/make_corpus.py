#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target under fuzz/corpus/<target>/.

Seeds are a few small, valid messages built from the NBD spec
(doc/proto.md) and the API's request bodies, so each fuzzer starts past the
magics and lengths it would otherwise have to guess. The output is
deterministic; rerun after changing a seed and commit the result:

    python3 fuzz/make_corpus.py
"""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

IHAVEOPT = 0x49484156454F5054
REQUEST_MAGIC = 0x25609513
FLAG_C_FIXED_NEWSTYLE, FLAG_C_NO_ZEROES = 1, 2
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
OPT_STRUCTURED_REPLY, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT = 8, 9, 10
INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 1, 2, 3
(CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE,
 CMD_WRITE_ZEROES, CMD_BLOCK_STATUS) = range(8)
CMD_FLAG_FUA, CMD_FLAG_NO_HOLE, CMD_FLAG_DF, CMD_FLAG_REQ_ONE = 1, 2, 4, 8


def string(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b


def option(opt, payload=b""):
    return struct.pack(">QII", IHAVEOPT, opt, len(payload)) + payload


def info_payload(name, items):
    return string(name) + struct.pack(">H", len(items)) + b"".join(
        struct.pack(">H", i) for i in items)


def meta_payload(export, queries):
    return string(export) + struct.pack(">I", len(queries)) + b"".join(
        string(q) for q in queries)


def request(cmd, offset=0, length=0, flags=0, cookie=1):
    return struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset, length)


def seeds():
    flags = struct.pack(">I", FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES)
    go = info_payload("fuzz", [INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE])
    meta = meta_payload("fuzz", ["base:allocation"])
    # option_parser: the input is an option header, and also each payload.
    yield "option_parser", "header_go", option(OPT_GO, go)[:16]
    yield "option_parser", "info", go
    yield "option_parser", "info_no_items", info_payload("", [])
    yield "option_parser", "meta_context", meta
    yield "option_parser", "meta_context_list_all", meta_payload("fuzz", ["base:"])
    yield "option_parser", "export_name", b"fuzz"
    # request_parser: a run of 28-byte request headers.
    yield "request_parser", "read_write", request(CMD_READ, 0, 4096) + request(
        CMD_WRITE, 4096, 512, CMD_FLAG_FUA, 2)
    yield "request_parser", "all_commands", b"".join(
        request(c, 512 * c, 512, 0, c) for c in range(8))
    yield "request_parser", "block_status", request(
        CMD_BLOCK_STATUS, 0, 65536, CMD_FLAG_REQ_ONE)
    # session: after the negotiation prefix fuzzing.rs adds (structured
    # replies, base:allocation, GO "fuzz"), transmission requests; with a
    # leading 'R', a raw handshake from the client's first byte.
    yield "session", "read", request(CMD_READ, 0, 4096, CMD_FLAG_DF)
    yield "session", "write_flush_disc", (
        request(CMD_WRITE, 8192, 16, CMD_FLAG_FUA) + bytes(range(16))
        + request(CMD_FLUSH, cookie=2) + request(CMD_DISC, cookie=3))
    yield "session", "trim_zeroes_cache", (
        request(CMD_TRIM, 0, 4096) + request(CMD_WRITE_ZEROES, 4096, 4096, CMD_FLAG_NO_HOLE, 2)
        + request(CMD_CACHE, 0, 4096, 0, 3) + request(CMD_BLOCK_STATUS, 0, 65536, 0, 4))
    yield "session", "raw_export_name", b"R" + struct.pack(">I", FLAG_C_FIXED_NEWSTYLE) + option(
        OPT_EXPORT_NAME, b"fuzz") + request(CMD_READ, 0, 512)
    yield "session", "raw_list_info_abort", b"R" + flags + option(OPT_LIST) + option(
        OPT_INFO, go) + option(OPT_LIST_META_CONTEXT, meta_payload("fuzz", [])) + option(OPT_ABORT)
    yield "session", "raw_go", b"R" + flags + option(OPT_STRUCTURED_REPLY) + option(
        OPT_SET_META_CONTEXT, meta) + option(OPT_GO, go) + request(CMD_BLOCK_STATUS, 0, 4096)
    # api_json: one valid body of each request type.
    bodies = {
        "create_volume": {"name": "vol1", "capacity_bytes": 1048576, "track_size": 65536,
                          "pool": "p1", "space_efficient": True},
        "create_volume_float": {"name": "v", "capacity_bytes": 4096.0},
        "create_pool": {"name": "p1", "capacity_bytes": 1073741824},
        "establish": {"source": "a", "target": "b", "background_copy": False,
                      "persistent": True, "copy_rate": 1048576, "recording": True,
                      "target_inhibit": True, "seqnum": 7},
        "establish_group": {"pairs": [{"source": "a", "target": "ta"},
                                      {"source": "b", "target": "tb"}],
                            "freeze": True, "freeze_timeout_secs": 120, "seqnum": 1},
        "freeze": {"volumes": ["a", "b"], "timeout_secs": 30},
        "unfreeze": {"volumes": ["a"]},
        "target_inhibit": {"inhibit": False},
        "resync": {"recording": True, "persistent": True, "background_copy": True},
        "reverse": {"fast": True},
        "set_rate": {"copy_rate": 0},
    }
    for name, body in bodies.items():
        yield "api_json", name, json.dumps(body, separators=(",", ":")).encode()
    # The freeze timeout that made the engine panic (Instant + Duration
    # overflow); kept so every run checks it again.
    yield "api_json", "regress_freeze_timeout_overflow", (
        b'{"volumes":["a"],"timeout_secs":9223372036854775807}')


def main():
    for target, name, data in seeds():
        d = os.path.join(HERE, "corpus", target)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
