//! `tzero token rotate ROLE`: a new API token for a role. The daemon keeps
//! only its digest, so this is the one time the token is shown.
//!
//! A new admin token is also written to `DATA/api-token` when that file
//! exists, so that the CLI on the daemon's host keeps working over TCP;
//! deleting that file keeps no admin token in plaintext at rest.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};

use super::common::{outln, Batch};
use crate::api_types::TokenRole;
use crate::client::Client;
use crate::output::print_json;

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: TokenAction,
}

#[derive(Debug, Subcommand)]
pub enum TokenAction {
    /// Replace ROLE's token with a new random one; the old one stops
    /// working at once. Prints the new token (once: the daemon keeps only
    /// its SHA-256 digest).
    Rotate(RotateArgs),
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// `admin` (everything) or `monitor` (reads only: GET routes, /metrics).
    #[arg(value_enum, value_name = "ROLE")]
    pub role: RoleArg,
    /// Write the token to FILE (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub save: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Admin,
    Monitor,
    /// Safeguarded Copy's second credential.
    Security,
}

pub(super) async fn token(
    client: &Client,
    batch: &mut Batch,
    a: TokenArgs,
    data: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let TokenAction::Rotate(r) = a.action;
    let role = match r.role {
        RoleArg::Admin => TokenRole::Admin,
        RoleArg::Monitor => TokenRole::Monitor,
        RoleArg::Security => TokenRole::Security,
    };
    let Some(rotated) = batch.record(client.rotate_token(role).await) else {
        return Ok(());
    };
    let local = data.join("api-token");
    if matches!(role, TokenRole::Admin) && local.exists() {
        crate::tokens::write_token_file(&local, &rotated.token)?;
        eprintln!("token: {} updated", local.display());
    }
    if let Some(file) = &r.save {
        crate::tokens::write_token_file(file, &rotated.token)?;
        outln!(
            "token: new {} token saved to {}",
            role_name(role),
            file.display()
        );
    } else if json {
        print_json(&[&rotated])?;
    } else {
        outln!("{}", rotated.token);
    }
    Ok(())
}

fn role_name(role: TokenRole) -> &'static str {
    match role {
        TokenRole::Admin => "admin",
        TokenRole::Monitor => "monitor",
        TokenRole::Security => "security",
    }
}
