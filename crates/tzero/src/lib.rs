//! The tzero daemon and its DSCLI-style command line, as a library so the
//! integration tests can reuse the pieces (size parsing, API types, client).
//!
//! Layering, outermost first: [`cli`] parses the command line; client verbs go
//! through [`client`] to the daemon's HTTP API ([`api`], wire types in
//! [`api_types`]); `serve` ([`serve`]) wires the engine, the API and the NBD
//! server ([`nbd_export`]) together; [`tls_listener`] puts the TCP API behind
//! TLS. Nothing here knows how FlashCopy works:
//! that lives in `tzero_engine`.

pub mod api;
pub mod api_types;
pub mod audit;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod metrics;
pub mod nbd_export;
pub mod output;
pub mod serve;
pub mod sgc;
pub mod tls_listener;
pub mod tokens;
pub mod units;
pub mod whole_numbers;
