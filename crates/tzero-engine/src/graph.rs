//! The relationship graph and its rules, on ids alone: no files, no locks, no I/O.
//!
//! A volume is the target of at most one relationship and the source of at most
//! [`MAX_TARGETS_PER_SOURCE`]; the graph has no cycles, so each volume's sources form a chain up
//! to a root (a cascade, A→B→C). The rules every change must keep live here, and are unit-tested
//! here; [`crate::topology`] owns the graph together with the volumes and relationships it names.
//!
//! Some rules depend on a relationship's copy state ("its target still reads through its
//! source"): callers pass that as a predicate, so the rules stay pure.

use crate::error::Refusal;
use std::collections::HashMap;

/// Most targets one source may have, as on the DS8000.
pub const MAX_TARGETS_PER_SOURCE: usize = 12;

/// Most Safeguarded Copy backups one source may have (the DS8000 keeps up to 500; one copy
/// serves them all, so more cost only their bitmaps). They do not count as targets.
pub const MAX_BACKUPS_PER_SOURCE: usize = 1000;

pub(crate) type VolId = u64;
pub(crate) type RelId = u64;

/// The relationships one volume takes part in.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Links {
    pub target_of: Option<RelId>,
    pub source_of: Vec<RelId>,
}

impl Links {
    pub fn is_empty(&self) -> bool {
        self.target_of.is_none() && self.source_of.is_empty()
    }
}

/// A relationship as the graph sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Edge {
    pub source: VolId,
    pub target: VolId,
}

/// Volumes and the relationships between them, by id.
#[derive(Debug, Default, Clone)]
pub(crate) struct Graph {
    links: HashMap<VolId, Links>,
    edges: HashMap<RelId, Edge>,
    /// The relationships whose targets are Safeguarded Copy backups.
    backups: std::collections::HashSet<RelId>,
}

static NO_LINKS: Links = Links {
    target_of: None,
    source_of: Vec::new(),
};

/// Names volumes and relationships in refusals.
pub(crate) trait Names {
    fn volume(&self, id: VolId) -> String;
}

impl Graph {
    pub fn links(&self, vol: VolId) -> &Links {
        self.links.get(&vol).unwrap_or(&NO_LINKS)
    }

    /// The relationship whose target `vol` is, and its source.
    pub fn parent(&self, vol: VolId) -> Option<(RelId, VolId)> {
        let rel = self.links(vol).target_of?;
        Some((rel, self.edges[&rel].source))
    }

    /// Adds a relationship; the caller has checked it with [`Graph::check_establish`].
    pub fn add(&mut self, rel: RelId, edge: Edge) {
        self.edges.insert(rel, edge);
        self.links
            .entry(edge.source)
            .or_default()
            .source_of
            .push(rel);
        self.links.entry(edge.target).or_default().target_of = Some(rel);
    }

    /// Makes `rel` the newest target of its source (its point in time moved: a resync). The
    /// targets of a source are kept in point-in-time order, oldest first.
    pub fn move_to_newest(&mut self, rel: RelId) {
        let Some(edge) = self.edges.get(&rel).copied() else {
            return;
        };
        if let Some(l) = self.links.get_mut(&edge.source) {
            l.source_of.retain(|r| *r != rel);
            l.source_of.push(rel);
        }
    }

    /// Marks `rel` (added already) as one whose target is a backup.
    pub fn mark_backup(&mut self, rel: RelId) {
        self.backups.insert(rel);
    }

    /// The targets of `vol` that count against [`MAX_TARGETS_PER_SOURCE`]: all but backups.
    fn counted_targets(&self, vol: VolId) -> usize {
        self.links(vol)
            .source_of
            .iter()
            .filter(|r| !self.backups.contains(r))
            .count()
    }

    /// Checks that each of `sources` may take one more backup.
    pub fn check_backups(&self, sources: &[VolId], names: &dyn Names) -> Result<(), Refusal> {
        for (i, s) in sources.iter().enumerate() {
            if sources[..i].contains(s) {
                return Err(Refusal::TargetTwice(names.volume(*s)));
            }
            let backups = self.links(*s).source_of.len() - self.counted_targets(*s);
            if backups + 1 > MAX_BACKUPS_PER_SOURCE {
                return Err(Refusal::TooManyTargets {
                    volume: names.volume(*s),
                    max: MAX_BACKUPS_PER_SOURCE,
                });
            }
        }
        Ok(())
    }

    /// Removes a relationship. Returns its edge, if it was there.
    pub fn remove(&mut self, rel: RelId) -> Option<Edge> {
        self.backups.remove(&rel);
        let edge = self.edges.remove(&rel)?;
        if let Some(l) = self.links.get_mut(&edge.source) {
            l.source_of.retain(|r| *r != rel);
        }
        if let Some(l) = self.links.get_mut(&edge.target) {
            if l.target_of == Some(rel) {
                l.target_of = None;
            }
        }
        for vol in [edge.source, edge.target] {
            if self.links.get(&vol).is_some_and(Links::is_empty) {
                self.links.remove(&vol);
            }
        }
        Some(edge)
    }

    /// Forgets a volume that takes part in no relationship.
    pub fn forget_volume(&mut self, vol: VolId) {
        debug_assert!(self.links(vol).is_empty());
        self.links.remove(&vol);
    }

    /// True when `ancestor` is `vol` or up `vol`'s cascade.
    pub fn is_upstream(&self, ancestor: VolId, vol: VolId) -> bool {
        let mut up = Some(vol);
        while let Some(v) = up {
            if v == ancestor {
                return true;
            }
            up = self.parent(v).map(|(_, s)| s);
        }
        false
    }

    /// A relationship out of `vol` whose target still reads through `vol`. Such a volume may
    /// not become a target, be resynced onto, restored or reverted: its dependents' point in
    /// time would change.
    pub fn dependent(&self, vol: VolId, reads_through: &dyn Fn(RelId) -> bool) -> Option<RelId> {
        self.links(vol)
            .source_of
            .iter()
            .copied()
            .find(|r| reads_through(*r))
    }

    /// Refuses when `vol` has a dependent (see [`Graph::dependent`]).
    pub fn check_no_dependents(
        &self,
        vol: VolId,
        action: &str,
        reads_through: &dyn Fn(RelId) -> bool,
        names: &dyn Names,
    ) -> Result<(), Refusal> {
        match self.dependent(vol, reads_through) {
            Some(rel) => Err(Refusal::HasDependents {
                action: action.to_string(),
                volume: names.volume(vol),
                dependent: names.volume(self.edges[&rel].target),
            }),
            None => Ok(()),
        }
    }

    /// Checks a consistency group of new relationships against the graph and each other:
    /// distinct volumes, every target free, no cycle, no target whose own targets still read
    /// through it, at most [`MAX_TARGETS_PER_SOURCE`] targets per source.
    pub fn check_establish(
        &self,
        pairs: &[Edge],
        reads_through: &dyn Fn(RelId) -> bool,
        names: &dyn Names,
    ) -> Result<(), Refusal> {
        if pairs.is_empty() {
            return Err(Refusal::NoPairs);
        }
        for (i, e) in pairs.iter().enumerate() {
            if e.source == e.target {
                return Err(Refusal::SameVolume(names.volume(e.source)));
            }
            if pairs[..i].iter().any(|p| p.target == e.target) {
                return Err(Refusal::TargetTwice(names.volume(e.target)));
            }
            if pairs.iter().any(|p| p.source == e.target) {
                return Err(Refusal::SourceAndTargetInGroup(names.volume(e.target)));
            }
        }
        for e in pairs {
            if let Some((_, existing)) = self.parent(e.target) {
                return Err(Refusal::TargetInUse {
                    tgt: names.volume(e.target),
                    existing: names.volume(existing),
                });
            }
            if self.is_upstream(e.target, e.source) {
                return Err(Refusal::Cycle {
                    src: names.volume(e.source),
                    tgt: names.volume(e.target),
                });
            }
            let action = format!("make {} a target", names.volume(e.target));
            self.check_no_dependents(e.target, &action, reads_through, names)?;
            let new_targets = pairs.iter().filter(|p| p.source == e.source).count();
            if self.counted_targets(e.source) + new_targets > MAX_TARGETS_PER_SOURCE {
                return Err(Refusal::TooManyTargets {
                    volume: names.volume(e.source),
                    max: MAX_TARGETS_PER_SOURCE,
                });
            }
        }
        Ok(())
    }

    /// Checks that `rel` may be reversed: its source is no target itself, and no other target of
    /// its source still reads through it.
    pub fn check_reverse(
        &self,
        rel: RelId,
        reads_through: &dyn Fn(RelId) -> bool,
        names: &dyn Names,
    ) -> Result<(), Refusal> {
        let edge = self.edges[&rel];
        let (src, tgt) = (names.volume(edge.source), names.volume(edge.target));
        if self.links(edge.source).target_of.is_some() {
            return Err(Refusal::SourceIsTarget { src, tgt });
        }
        if let Some(other) = self
            .links(edge.source)
            .source_of
            .iter()
            .find(|r| **r != rel && reads_through(**r))
        {
            return Err(Refusal::SourceHasIncompleteCopy {
                src,
                tgt,
                other: names.volume(self.edges[other].target),
            });
        }
        let action = format!("reverse {src}:{tgt}");
        self.check_no_dependents(edge.target, &action, reads_through, names)
    }

    /// What withdrawing `rel` (X→B) must clean first: the relationships out of B, whose targets
    /// may still read through B into X.
    pub fn downstream(&self, rel: RelId) -> Vec<RelId> {
        self.edges
            .get(&rel)
            .map(|e| self.links(e.target).source_of.clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct ByNumber;
    impl Names for ByNumber {
        fn volume(&self, id: VolId) -> String {
            format!("v{id}")
        }
    }

    fn edge(source: VolId, target: VolId) -> Edge {
        Edge { source, target }
    }

    const ALL_COPIED: &dyn Fn(RelId) -> bool = &|_| false;
    const NONE_COPIED: &dyn Fn(RelId) -> bool = &|_| true;

    fn chain() -> Graph {
        // 1 → 2 → 3 (rels 10, 11)
        let mut g = Graph::default();
        g.add(10, edge(1, 2));
        g.add(11, edge(2, 3));
        g
    }

    #[test]
    fn cascade_links_and_parents() {
        let g = chain();
        assert_eq!(g.parent(3), Some((11, 2)));
        assert_eq!(g.parent(2), Some((10, 1)));
        assert_eq!(g.parent(1), None);
        assert!(g.is_upstream(1, 3));
        assert!(!g.is_upstream(3, 1));
        assert_eq!(g.downstream(10), vec![11]);
        assert!(g.downstream(11).is_empty());
    }

    #[test]
    fn cycles_are_refused() {
        let g = chain();
        let r = g.check_establish(&[edge(3, 1)], ALL_COPIED, &ByNumber);
        assert_eq!(
            r,
            Err(Refusal::Cycle {
                src: "v3".into(),
                tgt: "v1".into()
            })
        );
        let r = g.check_establish(&[edge(4, 4)], ALL_COPIED, &ByNumber);
        assert_eq!(r, Err(Refusal::SameVolume("v4".into())));
    }

    #[test]
    fn a_target_has_one_source() {
        let g = chain();
        let r = g.check_establish(&[edge(5, 3)], ALL_COPIED, &ByNumber);
        assert!(matches!(r, Err(Refusal::TargetInUse { .. })), "{r:?}");
        let r = g.check_establish(&[edge(5, 6), edge(7, 6)], ALL_COPIED, &ByNumber);
        assert_eq!(r, Err(Refusal::TargetTwice("v6".into())));
        let r = g.check_establish(&[edge(5, 6), edge(6, 7)], ALL_COPIED, &ByNumber);
        assert_eq!(r, Err(Refusal::SourceAndTargetInGroup("v6".into())));
        assert_eq!(
            g.check_establish(&[], ALL_COPIED, &ByNumber),
            Err(Refusal::NoPairs)
        );
    }

    #[test]
    fn at_most_twelve_targets() {
        let mut g = Graph::default();
        for t in 0..MAX_TARGETS_PER_SOURCE as u64 - 1 {
            g.add(100 + t, edge(1, 2 + t));
        }
        assert!(g
            .check_establish(&[edge(1, 50)], ALL_COPIED, &ByNumber)
            .is_ok());
        let r = g.check_establish(&[edge(1, 50), edge(1, 51)], ALL_COPIED, &ByNumber);
        assert!(matches!(r, Err(Refusal::TooManyTargets { max: 12, .. })));
    }

    #[test]
    fn a_volume_read_through_may_not_become_a_target() {
        let g = chain();
        // 2's target 3 still reads through it: 2 cannot become a target of anything new...
        let mut g2 = g.clone();
        g2.remove(10);
        let r = g2.check_establish(&[edge(9, 2)], NONE_COPIED, &ByNumber);
        assert!(matches!(r, Err(Refusal::HasDependents { .. })), "{r:?}");
        // ...until its copy to 3 is complete.
        assert!(g2
            .check_establish(&[edge(9, 2)], ALL_COPIED, &ByNumber)
            .is_ok());
    }

    #[test]
    fn reverse_rules() {
        let g = chain();
        // 2 → 3 cannot be reversed: 2 is itself a target.
        let r = g.check_reverse(11, ALL_COPIED, &ByNumber);
        assert!(matches!(r, Err(Refusal::SourceIsTarget { .. })), "{r:?}");
        // 1 → 2 cannot be reversed while 3 reads through 2.
        let r = g.check_reverse(10, NONE_COPIED, &ByNumber);
        assert!(matches!(r, Err(Refusal::HasDependents { .. })), "{r:?}");
        assert!(g.check_reverse(10, ALL_COPIED, &ByNumber).is_ok());
        // Another incomplete target of the same source blocks it too.
        let mut g = Graph::default();
        g.add(1, edge(1, 2));
        g.add(2, edge(1, 3));
        let r = g.check_reverse(1, &|r| r == 2, &ByNumber);
        assert!(
            matches!(r, Err(Refusal::SourceHasIncompleteCopy { .. })),
            "{r:?}"
        );
    }

    #[test]
    fn targets_stay_in_point_in_time_order() {
        let mut g = Graph::default();
        g.add(1, edge(1, 2));
        g.add(2, edge(1, 3));
        g.add(3, edge(1, 4));
        assert_eq!(g.links(1).source_of, vec![1, 2, 3]);
        g.move_to_newest(1);
        assert_eq!(g.links(1).source_of, vec![2, 3, 1]);
        g.remove(3);
        assert_eq!(g.links(1).source_of, vec![2, 1]);
    }

    #[test]
    fn removing_leaves_no_trace() {
        let mut g = chain();
        assert_eq!(g.remove(11), Some(edge(2, 3)));
        assert_eq!(g.remove(11), None);
        assert!(g.links(3).is_empty());
        g.remove(10);
        assert!(g.links.is_empty() && g.edges.is_empty());
    }
}
