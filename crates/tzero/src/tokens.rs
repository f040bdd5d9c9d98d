//! API tokens by role, kept hashed: the daemon stores and compares only
//! SHA-256 digests (`DATA/tokens/ROLE.sha256`, one hex line, mode 0600), so a
//! copy of its state gives nobody a working token.
//!
//! Roles:
//! - `admin` may do everything (today's single token);
//! - `monitor` may only read: `GET`/`HEAD` routes, `/metrics` included.
//!
//! The plaintext exists only where it is handed out: at the first start the
//! admin token is written once to `DATA/api-token` (0600) for the local CLI,
//! and `tzero token rotate ROLE` prints the new one. A role without a hash
//! file has no token: the monitor role is off until it is first rotated.
//! Rotation writes the new digest to a temporary file, syncs it and renames
//! it over the old one before the daemon swaps it in memory, so a crash
//! leaves either the old token or the new one working, never neither.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Monitor,
    /// Safeguarded Copy's second credential: alone it only reads; with an admin
    /// request (header `X-Tzero-Security-Token`) it allows shortening a
    /// backup's retention.
    Security,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Monitor, Role::Security];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Monitor => "monitor",
            Role::Security => "security",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Whether this role may send a request with `method`: a monitor reads.
    pub fn may(self, method: &axum::http::Method) -> bool {
        use axum::http::Method;
        match self {
            Role::Admin => true,
            Role::Monitor | Role::Security => method == Method::GET || method == Method::HEAD,
        }
    }
}

type Digest32 = [u8; 32];

fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

/// The role digests, loaded from and saved to `DATA/tokens/`.
#[derive(Debug)]
pub struct TokenStore {
    dir: PathBuf,
    digests: RwLock<Vec<(Role, Digest32)>>,
}

impl TokenStore {
    /// Opens the store under `data`. On the first start (no admin digest)
    /// it makes the admin token: from `DATA/api-token` when an older daemon
    /// left one there (so existing clients keep working), else a new random
    /// one written there once for the local CLI.
    pub fn open(data: &Path) -> anyhow::Result<TokenStore> {
        let dir = data.join("tokens");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let store = TokenStore {
            dir,
            digests: RwLock::new(Vec::new()),
        };
        let mut digests = Vec::new();
        for role in Role::ALL {
            if let Some(d) = store.read_digest(role)? {
                digests.push((role, d));
            }
        }
        if !digests.iter().any(|(r, _)| *r == Role::Admin) {
            let token = admin_token_file(&data.join("api-token"))?;
            let d = digest(&token);
            store.write_digest(Role::Admin, &d)?;
            digests.push((Role::Admin, d));
        }
        // The security token is made once too, in its own file: whoever holds only the
        // admin token cannot shorten a retention.
        if !digests.iter().any(|(r, _)| *r == Role::Security) {
            let token = admin_token_file(&data.join(SECURITY_TOKEN_FILE))?;
            let d = digest(&token);
            store.write_digest(Role::Security, &d)?;
            digests.push((Role::Security, d));
        }
        *store.digests.write().expect("token lock") = digests;
        Ok(store)
    }

    /// True when `token` is the security token.
    pub fn is_security(&self, token: &str) -> bool {
        self.role_of(token) == Some(Role::Security)
    }

    /// The role of `token`, if it is one. Every role's digest is compared,
    /// in constant time, so the answer's timing says nothing about which
    /// bytes matched.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let given = digest(token);
        let digests = self.digests.read().expect("token lock");
        let mut found = None;
        for (role, d) in digests.iter() {
            if bool::from(d.ct_eq(&given)) {
                found = Some(*role);
            }
        }
        found
    }

    /// Makes a new random token for `role`, durably replaces the old one and
    /// returns it; the old token stops working at once.
    pub fn rotate(&self, role: Role) -> anyhow::Result<String> {
        let token = random_token()?;
        let d = digest(&token);
        self.write_digest(role, &d)?;
        let mut digests = self.digests.write().expect("token lock");
        digests.retain(|(r, _)| *r != role);
        digests.push((role, d));
        Ok(token)
    }

    fn path(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}.sha256", role.as_str()))
    }

    fn read_digest(&self, role: Role) -> anyhow::Result<Option<Digest32>> {
        let path = self.path(role);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        match parse_hex32(text.trim()) {
            Some(d) => Ok(Some(d)),
            None => bail!(
                "token digest {} is malformed (expected 64 hex digits); run `tzero token rotate {}` \
                 with the daemon stopped after deleting it",
                path.display(),
                role.as_str()
            ),
        }
    }

    fn write_digest(&self, role: Role, d: &Digest32) -> anyhow::Result<()> {
        let tmp = self.dir.join(format!(".{}.sha256.tmp", role.as_str()));
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        replace_private_file(&self.path(role), &tmp, &hex)?;
        // The rename is durable only once the directory is synced.
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", self.dir.display()))?;
        Ok(())
    }
}

fn parse_hex32(s: &str) -> Option<Digest32> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// 32 random bytes in hex.
fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The security token's plaintext file in the data directory (mode 0600).
pub const SECURITY_TOKEN_FILE: &str = "security-token";

/// The token of `DATA/api-token` (or `DATA/security-token`), created (0600, synced) if missing.
fn admin_token_file(path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim();
            if token.len() < 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(
                    "API token file {} is malformed; delete it to have a new one generated",
                    path.display()
                );
            }
            Ok(token.to_owned())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = random_token()?;
            write_token_file(path, &token)?;
            tracing::info!("generated the admin API token in {}", path.display());
            Ok(token)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a plaintext token file readable only by its owner (the CLI's
/// credential: `DATA/api-token`, or `token rotate --save FILE`).
pub fn write_token_file(path: &Path, token: &str) -> anyhow::Result<()> {
    replace_private_file(path, &path.with_extension("tmp"), token)
}

/// Replaces `path` with one line of `text` in a file only its owner can read:
/// written and synced under `tmp`, then renamed, so a crash leaves the old
/// file or the new one, never a torn one.
fn replace_private_file(path: &Path, tmp: &Path, text: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    file.write_all(format!("{text}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn first_start_makes_an_admin_token_stored_hashed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::open(dir.path()).expect("open");
        let token = std::fs::read_to_string(dir.path().join("api-token")).expect("token file");
        let token = token.trim();
        assert_eq!(token.len(), 64);
        assert_eq!(store.role_of(token), Some(Role::Admin));
        assert_eq!(store.role_of("nope"), None);
        let stored = std::fs::read_to_string(dir.path().join("tokens/admin.sha256")).unwrap();
        assert!(
            !stored.contains(token),
            "the digest file must not hold the token"
        );
        for f in ["api-token", "tokens/admin.sha256"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        // The monitor role has no token until it is rotated.
        assert!(!dir.path().join("tokens/monitor.sha256").exists());
    }

    #[test]
    fn an_older_token_file_is_adopted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = "ab".repeat(32);
        std::fs::write(dir.path().join("api-token"), format!("{old}\n")).unwrap();
        let store = TokenStore::open(dir.path()).expect("open");
        assert_eq!(store.role_of(&old), Some(Role::Admin));
    }

    #[test]
    fn rotation_replaces_the_token_durably() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = TokenStore::open(dir.path()).expect("open");
        let admin = std::fs::read_to_string(dir.path().join("api-token")).unwrap();
        let monitor = store.rotate(Role::Monitor).expect("rotate");
        assert_eq!(store.role_of(&monitor), Some(Role::Monitor));
        let admin2 = store.rotate(Role::Admin).expect("rotate");
        assert_eq!(
            store.role_of(admin.trim()),
            None,
            "the old admin token is dead"
        );
        assert_eq!(store.role_of(&admin2), Some(Role::Admin));
        // A restart reads the same digests.
        let again = TokenStore::open(dir.path()).expect("reopen");
        assert_eq!(again.role_of(&admin2), Some(Role::Admin));
        assert_eq!(again.role_of(&monitor), Some(Role::Monitor));
        assert_eq!(again.role_of(admin.trim()), None);
    }

    #[test]
    fn a_malformed_digest_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
        std::fs::write(dir.path().join("tokens/admin.sha256"), "xyz\n").unwrap();
        let err = TokenStore::open(dir.path()).expect_err("malformed");
        assert!(format!("{err:#}").contains("malformed"), "{err:#}");
    }

    #[test]
    fn monitor_reads_only() {
        use axum::http::Method;
        assert!(Role::Monitor.may(&Method::GET));
        assert!(Role::Monitor.may(&Method::HEAD));
        for m in [Method::POST, Method::DELETE, Method::PUT, Method::PATCH] {
            assert!(!Role::Monitor.may(&m), "{m}");
            assert!(Role::Admin.may(&m), "{m}");
        }
    }
}
