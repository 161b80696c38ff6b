//! Membership changes on a [`ProgressTracker`]: single-step changes (thesis §4.1),
//! joint consensus enter/leave (thesis §4.3), and restoring a configuration
//! from a [`ConfState`].
//!
//! The [`Changer`] works on copies and returns the new configuration and progress
//! map, so an invalid change leaves the tracker untouched.

use raft_proto::eraftpb::{ConfChangeSingle, ConfChangeType, ConfState};

use crate::errors::{Error, Result};
use crate::tracker::{Configuration, Progress, ProgressMap, ProgressTracker};

/// Computes configuration transitions from a tracker's current state.
pub(crate) struct Changer<'a> {
    tracker: &'a ProgressTracker,
    /// The leader's last index; new members start probing from it.
    last_index: u64,
}

fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::ConfChangeInvalid(msg.into()))
}

impl<'a> Changer<'a> {
    pub(crate) fn new(tracker: &'a ProgressTracker, last_index: u64) -> Changer<'a> {
        Changer {
            tracker,
            last_index,
        }
    }

    fn copy(&self) -> (Configuration, ProgressMap) {
        (self.tracker.conf.clone(), self.tracker.progress.clone())
    }

    /// Enters a joint configuration: the current voters become the outgoing half
    /// and `changes` apply to the incoming half (thesis §4.3).
    pub(crate) fn enter_joint(
        &self,
        auto_leave: bool,
        changes: &[ConfChangeSingle],
    ) -> Result<(Configuration, ProgressMap)> {
        let (mut cfg, mut prs) = self.copy();
        if cfg.voters.is_joint() {
            return invalid("config is already joint");
        }
        if cfg.voters.incoming.is_empty() {
            return invalid("can't make a zero-voter config joint");
        }
        cfg.voters.outgoing = cfg.voters.incoming.clone();
        self.apply(&mut cfg, &mut prs, changes)?;
        cfg.auto_leave = auto_leave;
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    /// Leaves the joint configuration: the outgoing half is dropped and
    /// `learners_next` become learners.
    pub(crate) fn leave_joint(&self) -> Result<(Configuration, ProgressMap)> {
        let (mut cfg, mut prs) = self.copy();
        if !cfg.voters.is_joint() {
            return invalid("can't leave a non-joint config");
        }
        for id in std::mem::take(&mut cfg.learners_next) {
            cfg.learners.insert(id);
            if let Some(pr) = prs.get_mut(&id) {
                pr.is_learner = true;
            }
        }
        for id in std::mem::take(&mut cfg.voters.outgoing) {
            if !cfg.voters.incoming.contains(&id) && !cfg.learners.contains(&id) {
                prs.remove(&id);
            }
        }
        cfg.auto_leave = false;
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    /// Applies changes without joint consensus; at most one voter may be added or
    /// removed, which keeps any two majorities overlapping (thesis §4.1).
    pub(crate) fn simple(
        &self,
        changes: &[ConfChangeSingle],
    ) -> Result<(Configuration, ProgressMap)> {
        let (mut cfg, mut prs) = self.copy();
        if cfg.voters.is_joint() {
            return invalid("can't apply simple config change in joint config");
        }
        self.apply(&mut cfg, &mut prs, changes)?;
        let old = &self.tracker.conf.voters.incoming;
        let changed = old.symmetric_difference(&cfg.voters.incoming).count();
        if changed > 1 {
            return invalid("more than one voter changed without entering joint config");
        }
        check_invariants(&cfg, &prs)?;
        Ok((cfg, prs))
    }

    fn apply(
        &self,
        cfg: &mut Configuration,
        prs: &mut ProgressMap,
        changes: &[ConfChangeSingle],
    ) -> Result<()> {
        for cc in changes {
            if cc.node_id == 0 {
                continue;
            }
            match cc.get_change_type() {
                ConfChangeType::AddNode => self.make_voter(cfg, prs, cc.node_id),
                ConfChangeType::AddLearnerNode => self.make_learner(cfg, prs, cc.node_id),
                ConfChangeType::RemoveNode => remove(cfg, prs, cc.node_id),
            }
        }
        if cfg.voters.incoming.is_empty() {
            return invalid("removed all voters");
        }
        Ok(())
    }

    fn init_progress(
        &self,
        cfg: &mut Configuration,
        prs: &mut ProgressMap,
        id: u64,
        learner: bool,
    ) {
        let mut pr = Progress::new(self.last_index.max(1), self.tracker.max_inflight);
        pr.is_learner = learner;
        // A new member counts as active so CheckQuorum does not depose the leader
        // before the member had a chance to answer.
        pr.recent_active = true;
        prs.insert(id, pr);
        if learner {
            cfg.learners.insert(id);
        } else {
            cfg.voters.incoming.insert(id);
        }
    }

    fn make_voter(&self, cfg: &mut Configuration, prs: &mut ProgressMap, id: u64) {
        let Some(pr) = prs.get_mut(&id) else {
            self.init_progress(cfg, prs, id, false);
            return;
        };
        pr.is_learner = false;
        cfg.learners.remove(&id);
        cfg.learners_next.remove(&id);
        cfg.voters.incoming.insert(id);
    }

    fn make_learner(&self, cfg: &mut Configuration, prs: &mut ProgressMap, id: u64) {
        let Some(pr) = prs.get_mut(&id) else {
            self.init_progress(cfg, prs, id, true);
            return;
        };
        if pr.is_learner {
            return;
        }
        cfg.voters.incoming.remove(&id);
        cfg.learners.remove(&id);
        cfg.learners_next.remove(&id);
        // A voter of the outgoing half must keep voting there until the joint
        // state is left; it becomes a learner then.
        if cfg.voters.outgoing.contains(&id) {
            cfg.learners_next.insert(id);
        } else {
            pr.is_learner = true;
            cfg.learners.insert(id);
        }
    }
}

fn remove(cfg: &mut Configuration, prs: &mut ProgressMap, id: u64) {
    if !prs.contains_key(&id) {
        return;
    }
    cfg.voters.incoming.remove(&id);
    cfg.learners.remove(&id);
    cfg.learners_next.remove(&id);
    // An outgoing voter keeps its progress until the joint state is left.
    if !cfg.voters.outgoing.contains(&id) {
        prs.remove(&id);
    }
}

fn check_invariants(cfg: &Configuration, prs: &ProgressMap) -> Result<()> {
    for id in cfg
        .voters
        .ids()
        .iter()
        .chain(&cfg.learners)
        .chain(&cfg.learners_next)
    {
        if !prs.contains_key(id) {
            return invalid(format!("no progress for {id}"));
        }
    }
    for id in &cfg.learners_next {
        if !cfg.voters.outgoing.contains(id) {
            return invalid(format!("{id} is in learners_next but not outgoing"));
        }
        if prs[id].is_learner {
            return invalid(format!("{id} is in learners_next but already a learner"));
        }
    }
    for id in &cfg.learners {
        if cfg.voters.contains(*id) {
            return invalid(format!("{id} is both learner and voter"));
        }
        if !prs[id].is_learner {
            return invalid(format!("{id} is a learner without the learner flag"));
        }
    }
    if !cfg.voters.is_joint() && (!cfg.learners_next.is_empty() || cfg.auto_leave) {
        return invalid("learners_next or auto_leave set outside a joint config");
    }
    Ok(())
}

fn single(ty: ConfChangeType, id: u64) -> ConfChangeSingle {
    let mut cc = ConfChangeSingle::default();
    cc.set_change_type(ty);
    cc.node_id = id;
    cc
}

/// Builds a tracker holding the configuration `cs` (on boot or from a snapshot).
///
/// # Errors
/// [`Error::ConfChangeInvalid`] when `cs` is inconsistent.
pub(crate) fn restore(
    max_inflight: usize,
    cs: &ConfState,
    last_index: u64,
) -> Result<ProgressTracker> {
    let mut tracker = ProgressTracker::new(max_inflight);
    let set = |t: &mut ProgressTracker, (cfg, prs): (Configuration, ProgressMap)| {
        t.conf = cfg;
        t.progress = prs;
    };
    if cs.voters.is_empty() && cs.voters_outgoing.is_empty() {
        // A node that knows no configuration yet (created by a message).
        if cs.learners.is_empty() && cs.learners_next.is_empty() {
            return Ok(tracker);
        }
        return invalid("conf state with learners but no voters");
    }
    // Outgoing voters first, one at a time, then enter the joint state that
    // replaces them with the incoming ones.
    let mut incoming = Vec::new();
    if cs.voters_outgoing.is_empty() {
        for &id in &cs.voters {
            let r = Changer::new(&tracker, last_index)
                .simple(&[single(ConfChangeType::AddNode, id)])?;
            set(&mut tracker, r);
        }
    } else {
        for &id in &cs.voters_outgoing {
            let r = Changer::new(&tracker, last_index)
                .simple(&[single(ConfChangeType::AddNode, id)])?;
            set(&mut tracker, r);
            incoming.push(single(ConfChangeType::RemoveNode, id));
        }
        incoming.extend(
            cs.voters
                .iter()
                .map(|&id| single(ConfChangeType::AddNode, id)),
        );
    }
    let learners = cs.learners.iter().chain(&cs.learners_next);
    incoming.extend(learners.map(|&id| single(ConfChangeType::AddLearnerNode, id)));
    if cs.voters_outgoing.is_empty() {
        for cc in &incoming {
            let r = Changer::new(&tracker, last_index).simple(std::slice::from_ref(cc))?;
            set(&mut tracker, r);
        }
    } else {
        let r = Changer::new(&tracker, last_index).enter_joint(cs.auto_leave, &incoming)?;
        set(&mut tracker, r);
    }
    Ok(tracker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(voters: &[u64], learners: &[u64], outgoing: &[u64], next: &[u64]) -> ConfState {
        let mut cs = ConfState::default();
        cs.voters = voters.to_vec();
        cs.learners = learners.to_vec();
        cs.voters_outgoing = outgoing.to_vec();
        cs.learners_next = next.to_vec();
        cs.auto_leave = !outgoing.is_empty();
        cs
    }

    #[test]
    fn restore_round_trips_3a() {
        let cases = [
            cs(&[1, 2, 3], &[], &[], &[]),
            cs(&[1, 2, 3], &[4, 5], &[], &[]),
            cs(&[1, 2, 3], &[5], &[1, 2, 4, 6], &[4]),
            cs(&[8, 9], &[], &[1, 2], &[]),
        ];
        for c in cases {
            let t = restore(256, &c, 10).unwrap();
            assert_eq!(t.conf_state(), c);
        }
        assert!(restore(256, &cs(&[], &[1], &[], &[]), 10).is_err());
    }

    #[test]
    fn simple_change_allows_one_voter_3a() {
        let t = restore(256, &cs(&[1, 2, 3], &[], &[], &[]), 10).unwrap();
        let c = Changer::new(&t, 10);
        let (cfg, prs) = c.simple(&[single(ConfChangeType::AddNode, 4)]).unwrap();
        assert_eq!(cfg.voters.incoming.len(), 4);
        assert_eq!(prs[&4].next_idx(), 10);
        assert!(c
            .simple(&[
                single(ConfChangeType::AddNode, 4),
                single(ConfChangeType::AddNode, 5)
            ])
            .is_err());
        // Adding a learner and a voter is one voter change.
        assert!(c
            .simple(&[
                single(ConfChangeType::AddNode, 4),
                single(ConfChangeType::AddLearnerNode, 5)
            ])
            .is_ok());
        let one = restore(256, &cs(&[1], &[], &[], &[]), 10).unwrap();
        assert!(Changer::new(&one, 10)
            .simple(&[single(ConfChangeType::RemoveNode, 1)])
            .is_err());
    }

    #[test]
    fn joint_enter_and_leave_3a() {
        let mut t = restore(256, &cs(&[1, 2, 3], &[], &[], &[]), 10).unwrap();
        let changes = [
            single(ConfChangeType::RemoveNode, 3),
            single(ConfChangeType::AddNode, 4),
            single(ConfChangeType::AddLearnerNode, 2),
        ];
        let (cfg, prs) = Changer::new(&t, 10).enter_joint(true, &changes).unwrap();
        t.conf = cfg;
        t.progress = prs;
        assert_eq!(t.conf_state(), cs(&[1, 4], &[], &[1, 2, 3], &[2]));
        assert!(t.get(3).is_some(), "outgoing voter keeps its progress");
        assert!(Changer::new(&t, 10).enter_joint(false, &changes).is_err());
        assert!(Changer::new(&t, 10).simple(&changes[..1]).is_err());
        let (cfg, prs) = Changer::new(&t, 10).leave_joint().unwrap();
        t.conf = cfg;
        t.progress = prs;
        assert_eq!(t.conf_state(), cs(&[1, 4], &[2], &[], &[]));
        assert!(t.get(3).is_none());
        assert!(t.get(2).unwrap().is_learner());
        assert!(Changer::new(&t, 10).leave_joint().is_err());
    }
}
