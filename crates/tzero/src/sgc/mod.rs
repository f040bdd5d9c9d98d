//! Safeguarded Copy in the daemon: the wire types ([`types`]), the schedules and their
//! scheduler ([`policies`]), and the client calls ([`client`]). The backups themselves, their
//! immutability and recovery are the engine's (`tzero_engine::safeguarded`).

pub mod client;
pub mod policies;
pub mod types;
