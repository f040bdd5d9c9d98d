//! Changes to a relationship's settings that move no data: NOCOPY→COPY, the copy rate, target
//! write inhibit. Each is one durable record change (see [`Engine::update_record_then`]).

use crate::catalog::RelRecord;
use crate::engine::Engine;
use crate::error::{FlashError, Refusal};
use crate::relationship::{FlashInfo, Rel};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Engine {
    /// Turns NOCOPY into COPY.
    pub fn start_background_copy(
        &self,
        source: &str,
        target: &str,
    ) -> Result<FlashInfo, FlashError> {
        self.update_record(source, target, |r| {
            if r.background_copy {
                return Err(Refusal::AlreadyCopy {
                    src: source.to_string(),
                    tgt: target.to_string(),
                });
            }
            r.background_copy = true;
            Ok(())
        })
    }

    /// Changes the background copy rate (bytes per second, 0 = unlimited), also mid-copy.
    pub fn set_copy_rate(
        &self,
        source: &str,
        target: &str,
        rate: u64,
    ) -> Result<FlashInfo, FlashError> {
        self.update_record(source, target, |r| {
            r.copy_rate = rate;
            Ok(())
        })
    }

    /// Sets or lifts target write inhibit (`rmflash --resettgtinhibit` lifts it).
    pub fn set_target_inhibit(
        &self,
        source: &str,
        target: &str,
        inhibit: bool,
    ) -> Result<FlashInfo, FlashError> {
        self.update_record_then(
            source,
            target,
            |r| {
                r.target_inhibit = inhibit;
                Ok(())
            },
            |rel| {
                rel.inhibit.store(inhibit, Ordering::Release);
                Ok(())
            },
        )
    }

    pub(super) fn update_record(
        &self,
        source: &str,
        target: &str,
        f: impl FnOnce(&mut RelRecord) -> Result<(), Refusal>,
    ) -> Result<FlashInfo, FlashError> {
        self.update_record_then(source, target, f, |_| Ok(()))
    }

    /// Changes a relationship's record durably, then runs `then` on it, all under `admin` so
    /// no other operation sees the record and the in-memory state disagree. `f` checks and
    /// changes a copy of the record; a refusal changes nothing. Returns the relationship as it
    /// was after the change.
    pub(super) fn update_record_then(
        &self,
        source: &str,
        target: &str,
        f: impl FnOnce(&mut RelRecord) -> Result<(), Refusal>,
        then: impl FnOnce(&Arc<Rel>) -> Result<(), FlashError>,
    ) -> Result<FlashInfo, FlashError> {
        let inner = &self.inner;
        inner.guard()?;
        let _admin = inner.admin.lock();
        let rel = self.find_rel(source, target)?;
        let mut record = rel.record.lock().clone();
        f(&mut record)?;
        inner.commit_record(&record, "updating a relationship")?;
        *rel.record.lock() = record;
        let info = rel.info();
        then(&rel)?;
        inner.kick();
        Ok(info)
    }
}
