//! The topology: every pool, volume and relationship of the engine, by id, with the graph
//! between them. It lives in one `RwLock<Topology>` ([`crate::engine::Inner::topology`]):
//! host requests, destage batches and copy steps hold it shared, so each sees one consistent
//! graph; relationship changes hold it exclusively. That links change only under the exclusive
//! lock is now a matter of types: `&mut Topology` is the only way to change them.
//!
//! Volumes and relationships refer to each other by id only, so nothing here forms an `Arc`
//! cycle and dropping the topology frees every volume, file, cache and bitmap.
//!
//! The view rules of the seed live here too: which file holds a volume's view of a track.
//!
//! **One copy, whatever the number of targets.** The targets of one source are kept in
//! point-in-time order (oldest first). When the source overwrites a track that several targets
//! still read from it, the T0 data is copied to the newest of them only, and that target's
//! `shared` bit says it now holds the track for the older ones too. An older target whose bit is
//! clear reads the track from the nearest newer sibling with the `shared` bit set, else from
//! the source's view. All those targets' T0 data for the track is the same: none of them had
//! its own copy, so the source had not changed it since the oldest one's T0. Before a holder's
//! track changes (a host write to it, a withdraw, a resync or revert of it), the track is first
//! pushed down to the nearest older sibling still reading it, which becomes the holder
//! ([`Topology::push_down_target`]).

use crate::graph::{Edge, Graph, Links, Names, RelId, VolId};
use crate::relationship::{Rel, SOURCE, TARGET};
use crate::space::Pool;
use crate::storage::BlockFile;
use crate::volume::Volume;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Topology {
    pub pools: BTreeMap<String, Arc<Pool>>,
    volumes: BTreeMap<VolId, Arc<Volume>>,
    names: BTreeMap<String, VolId>,
    rels: BTreeMap<RelId, Arc<Rel>>,
    graph: Graph,
}

impl Names for Topology {
    fn volume(&self, id: VolId) -> String {
        self.volumes
            .get(&id)
            .map_or_else(|| format!("#{id}"), |v| v.name.clone())
    }
}

impl Topology {
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn volume(&self, id: VolId) -> &Arc<Volume> {
        &self.volumes[&id]
    }

    /// A relationship's source and target volumes.
    pub fn volumes_of(&self, rel: &Rel) -> (Arc<Volume>, Arc<Volume>) {
        (
            self.volume(rel.source).clone(),
            self.volume(rel.target).clone(),
        )
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Volume>> {
        self.names.get(name).map(|id| &self.volumes[id])
    }

    /// Every volume, in name order (the order listings show).
    pub fn volumes(&self) -> impl Iterator<Item = &Arc<Volume>> {
        self.names.values().map(|id| &self.volumes[id])
    }

    /// The extent pool with catalog id `id`.
    pub fn pool_by_id(&self, id: u64) -> Option<&Arc<Pool>> {
        self.pools.values().find(|p| p.id == id)
    }

    /// The backups of `source` (the relationships to them), oldest first.
    pub fn backups_of(&self, source: VolId) -> impl Iterator<Item = &Arc<Rel>> {
        self.source_of(source)
            .filter(|r| self.volumes.get(&r.target).is_some_and(|v| v.is_backup()))
    }

    pub fn rel(&self, id: RelId) -> Option<&Arc<Rel>> {
        self.rels.get(&id)
    }

    pub fn rels(&self) -> impl Iterator<Item = &Arc<Rel>> {
        self.rels.values()
    }

    pub fn links(&self, vol: VolId) -> &Links {
        self.graph.links(vol)
    }

    /// The relationship whose target `vol` is.
    pub fn target_of(&self, vol: VolId) -> Option<&Arc<Rel>> {
        self.links(vol).target_of.map(|r| &self.rels[&r])
    }

    /// The relationships whose source `vol` is.
    pub fn source_of(&self, vol: VolId) -> impl Iterator<Item = &Arc<Rel>> {
        self.links(vol).source_of.iter().map(|r| &self.rels[r])
    }

    /// The relationship `source:target`, by names.
    pub fn find_rel(&self, source: &str, target: &str) -> Option<&Arc<Rel>> {
        let tgt = self.by_name(target)?;
        self.target_of(tgt.id).filter(|r| r.source_name == source)
    }

    pub fn insert_volume(&mut self, vol: Arc<Volume>) {
        self.names.insert(vol.name.clone(), vol.id);
        self.volumes.insert(vol.id, vol);
    }

    /// Removes a volume that takes part in no relationship.
    pub fn remove_volume(&mut self, id: VolId) -> Option<Arc<Volume>> {
        let vol = self.volumes.remove(&id)?;
        self.names.remove(&vol.name);
        self.graph.forget_volume(id);
        Some(vol)
    }

    pub fn insert_rel(&mut self, rel: Arc<Rel>) {
        self.graph.add(
            rel.id,
            Edge {
                source: rel.source,
                target: rel.target,
            },
        );
        if self.volumes.get(&rel.target).is_some_and(|v| v.is_backup()) {
            self.graph.mark_backup(rel.id);
        }
        self.rels.insert(rel.id, rel);
    }

    pub fn remove_rel(&mut self, id: RelId) -> Option<Arc<Rel>> {
        self.graph.remove(id);
        self.rels.remove(&id)
    }

    /// True when the relationship's target still reads some tracks through its source: it is
    /// live and its copy is incomplete.
    pub fn reads_through(&self, rel: RelId) -> bool {
        self.rels
            .get(&rel)
            .is_some_and(|r| r.is_live() && !r.is_complete())
    }

    /// True when a write to `track` of `vol` may go straight to the volume file: no target
    /// still reads the track's T0 data from it, no change record is owed, and (when `vol` is a
    /// target) no older sibling reads the track from it; all durably. Callers hold the
    /// track's stripe.
    pub fn write_through_ok(&self, vol: VolId, track: u64) -> bool {
        if self.needs_copy(vol, track, true).is_some() {
            return false;
        }
        let unrecorded = |side: usize| {
            move |r: &Arc<Rel>| {
                r.is_live()
                    && r.recording.load(std::sync::atomic::Ordering::Acquire)
                    && !r.changed[side].get(track)
            }
        };
        !self.source_of(vol).any(unrecorded(SOURCE))
            && !self
                .target_of(vol)
                .is_some_and(|r| r.is_live() && (!r.settled(TARGET, track) || r.shared.get(track)))
    }

    /// The sibling that must receive `track` before `source` overwrites it: the newest live
    /// target that still reads it from the source (bit clear, and no newer sibling holds it
    /// shared). With `durable`, a bit not yet durable counts as clear. `None`: every target has
    /// the track or reads it from a sibling.
    pub fn needs_copy(&self, source: VolId, track: u64, durable: bool) -> Option<&Arc<Rel>> {
        for id in self.links(source).source_of.iter().rev() {
            let r = &self.rels[id];
            // A failed holder still stands for the older targets' data: they read an error
            // there, never the source's newer data.
            if r.shared.get(track) {
                return None;
            }
            if !r.is_live() {
                continue;
            }
            let copied = if durable {
                r.durably_copied(track)
            } else {
                r.bitmap.get(track)
            };
            if !copied {
                return Some(r);
            }
        }
        None
    }

    /// True when a target older than `rel` still reads `track` through the source's view, so
    /// that a copy `rel` receives must be shared with it.
    pub fn older_reader(&self, rel: &Rel, track: u64) -> bool {
        self.older_siblings(rel)
            .take_while(|r| !r.shared.get(track))
            .any(|r| r.is_live() && !r.bitmap.get(track))
    }

    /// The nearest sibling newer than `rel` that holds `track` shared.
    fn shared_holder(&self, rel: &Rel, track: u64) -> Option<&Arc<Rel>> {
        let siblings = &self.links(rel.source).source_of;
        let at = siblings.iter().position(|r| *r == rel.id)?;
        siblings[at + 1..]
            .iter()
            .map(|id| &self.rels[id])
            .find(|r| r.shared.get(track))
    }

    /// The siblings newer than `rel`, nearest first.
    pub fn newer_siblings<'a>(&'a self, rel: &Rel) -> impl Iterator<Item = &'a Arc<Rel>> + 'a {
        let siblings = &self.links(rel.source).source_of;
        let at = siblings
            .iter()
            .position(|r| *r == rel.id)
            .map_or(siblings.len(), |at| at + 1);
        siblings[at..].iter().map(|id| &self.rels[id])
    }

    /// The siblings older than `rel`, nearest first.
    fn older_siblings<'a>(&'a self, rel: &Rel) -> impl Iterator<Item = &'a Arc<Rel>> + 'a {
        let siblings = &self.links(rel.source).source_of;
        let at = siblings.iter().position(|r| *r == rel.id).unwrap_or(0);
        siblings[..at].iter().rev().map(|id| &self.rels[id])
    }

    /// Where `holder`'s shared `track` must go before it changes: the nearest older live
    /// sibling that reads it from `holder` and whose own copy is not durable. `None` when no
    /// sibling depends on it any more.
    pub fn push_down_target(&self, holder: &Rel, track: u64) -> Option<&Arc<Rel>> {
        self.older_siblings(holder)
            .take_while(|r| !r.shared.get(track))
            .find(|r| r.is_live() && !r.durably_copied(track))
    }

    /// Makes `rel` the newest target of its source (a resync moved its point in time).
    pub fn move_to_newest(&mut self, rel: RelId) {
        self.graph.move_to_newest(rel);
    }

    /// Where `vol`'s view of `track` lives: `None` for its own file, or the volume whose file
    /// holds it. A target whose bit is clear sees its source's view, which may itself be a
    /// target (cascading, A→B→C: C's uncopied track is B's view, which may be A's file).
    /// Errors with the name of a volume whose relationship failed: its view is gone.
    pub fn view_source(&self, vol: VolId, track: u64) -> Result<Option<&Arc<Volume>>, String> {
        let mut view = None;
        let mut at = vol;
        while let Some(r) = self.target_of(at) {
            if r.failed.load(std::sync::atomic::Ordering::Acquire) {
                return Err(r.target_name.clone());
            }
            if r.bitmap.get(track) {
                break;
            }
            if let Some(holder) = self.shared_holder(r, track) {
                if holder.failed.load(std::sync::atomic::Ordering::Acquire) {
                    return Err(holder.target_name.clone());
                }
                return Ok(Some(self.volume(holder.target)));
            }
            at = r.source;
            view = Some(self.volume(at));
        }
        Ok(view)
    }

    /// The file holding `vol`'s view of `track`.
    pub fn view_file(&self, vol: VolId, track: u64) -> Result<&Arc<dyn BlockFile>, String> {
        Ok(match self.view_source(vol, track)? {
            Some(v) => &v.file,
            None => &self.volume(vol).file,
        })
    }

    /// The files `vol` still reads through: each source up its cascade whose copy to the
    /// volume below it is incomplete. Syncing them with the volume's own file makes its whole
    /// view durable.
    pub fn upstream_files(&self, vol: VolId) -> Vec<(String, Arc<dyn BlockFile>)> {
        let mut files = Vec::new();
        let mut at = vol;
        while let Some(r) = self.target_of(at) {
            if !r.is_live() || r.bitmap.is_full() {
                break;
            }
            at = r.source;
            let v = self.volume(at);
            files.push((v.name.clone(), v.file.clone()));
        }
        files
    }

    /// Makes a volume's whole view durable: its file and every file it still reads through.
    pub fn sync_view(&self, vol: VolId) -> std::io::Result<()> {
        self.volume(vol).file.sync()?;
        for (_, file) in self.upstream_files(vol) {
            file.sync()?;
        }
        Ok(())
    }

    /// True while hosts may not write `vol`: the target of a live relationship with write
    /// inhibit.
    pub fn write_inhibited(&self, vol: VolId) -> bool {
        self.target_of(vol)
            .is_some_and(|r| r.is_live() && r.inhibit.load(std::sync::atomic::Ordering::Acquire))
    }
}
