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

    pub fn by_name(&self, name: &str) -> Option<&Arc<Volume>> {
        self.names.get(name).map(|id| &self.volumes[id])
    }

    pub fn volumes(&self) -> impl Iterator<Item = &Arc<Volume>> {
        self.volumes.values()
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

    /// True when a write to `track` of `vol` may go straight to the volume file: no
    /// relationship still owes T0 data or a change record for it, durably. Callers hold the
    /// track's stripe.
    pub fn write_through_ok(&self, vol: VolId, track: u64) -> bool {
        let owed = |side: usize| move |r: &Arc<Rel>| r.is_live() && !r.settled(side, track);
        !self.source_of(vol).any(owed(SOURCE)) && !self.target_of(vol).is_some_and(owed(TARGET))
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
