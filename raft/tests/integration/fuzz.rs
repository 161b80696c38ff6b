//! Fuzzing `RawNode::step` (proptest): messages with arbitrary field values,
//! damaged copies of real messages and replays of real messages, all taken
//! from a running in-memory cluster, are stepped into a node in each role —
//! leader, follower, candidate, pre-candidate, learner, empty joiner — and the
//! cluster then runs on.
//!
//! What must hold, by the kind of input:
//! * every input: no panic (in the library, or in an application driving it
//!   as the `Node` harness does), an `Err` leaves the node unchanged, and on
//!   every node the term never decreases, the commit index stays within the
//!   log, and an entry once committed there never changes;
//! * damage (a real message with one field made impossible): refused;
//! * replays (a real message again, late, or a leader's request to another
//!   peer): tolerated — Election Safety (one leader per term), committed
//!   entries equal on every node, and State Machine Safety across the cluster.
//!
//! The cluster-wide properties are not asserted once a node has accepted an
//! arbitrary message: a well-formed message with made-up content (a vote
//! grant, an acknowledgement, a commit index) is a forgery no Raft node can
//! tell from the real thing (Raft does not tolerate Byzantine faults).
//!
//! Cases: `RAFT_FUZZ_CASES` (default 500, about a second); `RAFT_FUZZ_SECS`
//! repeats batches of them from successive seeds for that long, seed `RAFT_FUZZ_SEED` (printed on
//! failure); proptest shrinks a failing case to a minimal one.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, RngAlgorithm, TestRng, TestRunner};
use protobuf::ProtobufEnum as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType, Snapshot};
use raft::{Error, MemStorage, StateRole, Status};

use crate::network::{msg, Network};
use crate::node::{conf_state, config, Node};

/// The role of the node messages are stepped into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Leader,
    Follower,
    Candidate,
    PreCandidate,
    Learner,
    EmptyJoiner,
}

const ROLES: [Role; 6] = [
    Role::Leader,
    Role::Follower,
    Role::Candidate,
    Role::PreCandidate,
    Role::Learner,
    Role::EmptyJoiner,
];

/// A number drawn relative to the node's state: small, near a base (its term
/// or last index), near `u64::MAX`, or anything.
#[derive(Debug, Clone, Copy)]
struct Num(u8, u64);

impl Num {
    fn get(self, base: u64) -> u64 {
        match self.0 % 4 {
            0 => self.1 % 4,
            1 => base.saturating_add(self.1 % 5).saturating_sub(2),
            2 => u64::MAX - self.1 % 3,
            _ => self.1,
        }
    }
}

fn num() -> impl Strategy<Value = Num> {
    (any::<u8>(), any::<u64>()).prop_map(|(k, v)| Num(k, v))
}

/// A message with arbitrary fields, materialized against the target node.
#[derive(Debug, Clone)]
struct ArbMsg {
    ty: u8,
    from: u8,
    to_target: bool,
    term: Num,
    index: Num,
    log_term: Num,
    commit: Num,
    reject: bool,
    hint: Num,
    /// (follow the previous entry?, index, term, type, data)
    entries: Vec<(bool, Num, Num, u8, Vec<u8>)>,
    /// (index, term, voters, learners, outgoing, auto leave, data)
    snapshot: Option<(Num, Num, u8, u8, u8, bool, Vec<u8>)>,
    context: Vec<u8>,
}

fn arb_msg() -> impl Strategy<Value = ArbMsg> {
    let entry = (
        any::<bool>(),
        num(),
        num(),
        0..3u8,
        prop::collection::vec(any::<u8>(), 0..6),
    );
    let snap = (
        num(),
        num(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..30),
    );
    (
        (
            0..19u8,
            0..8u8,
            prop::bool::weighted(0.9),
            num(),
            num(),
            num(),
            num(),
        ),
        (
            any::<bool>(),
            num(),
            prop::collection::vec(entry, 0..4),
            prop::option::of(snap),
            prop::collection::vec(any::<u8>(), 0..3),
        ),
    )
        .prop_map(
            |(
                (ty, from, to_target, term, index, log_term, commit),
                (reject, hint, entries, snapshot, context),
            )| ArbMsg {
                ty,
                from,
                to_target,
                term,
                index,
                log_term,
                commit,
                reject,
                hint,
                entries,
                snapshot,
                context,
            },
        )
}

fn ids(mask: u8) -> Vec<u64> {
    (1..=6u64).filter(|i| mask & (1 << (i - 1)) != 0).collect()
}

impl ArbMsg {
    fn build(&self, target: &Node) -> Message {
        let r = target.raw.raft();
        let (term, last) = (r.term(), r.raft_log().last_index());
        let ty = MessageType::from_i32(i32::from(self.ty)).expect("type in range");
        let to = if self.to_target { target.id() } else { 7 };
        let mut m = msg(u64::from(self.from), to, ty);
        m.term = self.term.get(term);
        m.index = self.index.get(last);
        m.log_term = self.log_term.get(term);
        m.commit = self.commit.get(last);
        m.reject = self.reject;
        m.reject_hint = self.hint.get(last);
        m.context = self.context.clone().into();
        let mut prev = m.index;
        for (follow, index, t, ty, data) in &self.entries {
            let mut e = Entry::default();
            e.index = if *follow {
                prev.wrapping_add(1)
            } else {
                index.get(last)
            };
            e.term = t.get(term);
            e.set_entry_type(
                [
                    EntryType::EntryNormal,
                    EntryType::EntryConfChange,
                    EntryType::EntryConfChangeV2,
                ][*ty as usize],
            );
            e.data = data.clone().into();
            prev = e.index;
            m.mut_entries().push(e);
        }
        if let Some((index, t, voters, learners, outgoing, auto_leave, data)) = &self.snapshot {
            let mut s = Snapshot::default();
            let meta = s.mut_metadata();
            meta.index = index.get(last);
            meta.term = t.get(term);
            let mut cs = conf_state(&ids(*voters), &ids(*learners));
            cs.voters_outgoing = ids(*outgoing);
            cs.auto_leave = *auto_leave;
            meta.set_conf_state(cs);
            s.data = data.clone().into();
            m.set_snapshot(s);
        }
        m
    }
}

/// One step of a case.
#[derive(Debug, Clone)]
enum Input {
    /// A message with arbitrary fields.
    Arbitrary(Box<ArbMsg>),
    /// A real message (the `pick`-th of those delivered) with damage `kind`.
    Damage { pick: usize, kind: u8, k: u64 },
    /// A real message again, to its recipient or (for a request that could
    /// have gone to any peer) to node `to`.
    Replay { pick: usize, to: Option<u8> },
    /// Ticks of node `node`, the cluster delivering what follows.
    Tick { node: u8, n: u8 },
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        3 => arb_msg().prop_map(|m| Input::Arbitrary(Box::new(m))),
        3 => (any::<usize>(), 0..14u8, any::<u64>()).prop_map(|(pick, kind, k)| Input::Damage { pick, kind, k }),
        2 => (any::<usize>(), prop::option::of(1..6u8)).prop_map(|(pick, to)| Input::Replay { pick, to }),
        1 => (1..6u8, 1..4u8).prop_map(|(node, n)| Input::Tick { node, n }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    role: Role,
    /// Bits: PreVote, CheckQuorum, catch up the joiner, transfer, compaction.
    flags: u8,
    proposals: u8,
    inputs: Vec<Input>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..6usize,
        any::<u8>(),
        0..4u8,
        prop::collection::vec(input(), 1..8),
    )
        .prop_map(|(r, flags, proposals, inputs)| Case {
            role: ROLES[r],
            flags,
            proposals,
            inputs,
        })
}

fn change(ty: ConfChangeType, id: u64) -> ConfChange {
    let mut c = ConfChange::default();
    c.set_change_type(ty);
    c.node_id = id;
    c
}

/// A running cluster — voters 1–3, learner 4, joiner 5 — whose history
/// produced every kind of message, with node `target` in `role`.
fn fixture(role: Role, flags: u8, proposals: u8, watch: &mut Watch) -> (Network, u64) {
    let pre_vote = role == Role::PreCandidate || (role != Role::Candidate && flags & 1 != 0);
    let check_quorum = flags & 2 != 0;
    let set = move |c: &mut raft::Config| {
        c.pre_vote = pre_vote;
        c.check_quorum = check_quorum;
    };
    let mut net = Network::new_with(3, set);
    let mut c4 = config(4);
    set(&mut c4);
    net.add_node(Node::new(
        c4,
        MemStorage::new_with_conf_state(conf_state(&[1, 2, 3], &[])),
    ));
    let mut c5 = config(5);
    set(&mut c5);
    net.add_node(Node::new(c5, MemStorage::new()));
    net.campaign(1);
    watch.check(&net);
    for i in 0..proposals {
        let _ = net.propose(2, &[i]);
    }
    let _ = net.with_node(1, |r| {
        r.propose_conf_change(vec![], change(ConfChangeType::AddLearnerNode, 4))
    });
    net.tick(1);
    let catch_up_joiner = flags & 4 != 0 && role != Role::EmptyJoiner;
    net.node(1)
        .storage
        .set_snapshot_unavailable(!catch_up_joiner);
    let _ = net.with_node(1, |r| {
        r.propose_conf_change(vec![], change(ConfChangeType::AddLearnerNode, 5))
    });
    net.tick(1);
    let _ = net.with_node(2, |r| r.read_index(b"r".to_vec()));
    watch.check(&net);
    if flags & 16 != 0 {
        net.isolate(3);
        for i in 0..4u8 {
            let _ = net.propose(1, &[i]);
        }
        net.node_mut(1).snapshot_and_compact();
        net.recover();
        net.tick(1);
        watch.check(&net);
    }
    if flags & 8 != 0 {
        net.with_node(3, |r| r.transfer_leader(2));
        net.tick(1);
        watch.check(&net);
    }
    let leader = net.leaders().first().copied().unwrap_or(1);
    let follower = [3, 2].into_iter().find(|&f| f != leader).unwrap();
    let target = match role {
        Role::Leader => leader,
        Role::Follower => follower,
        Role::Candidate | Role::PreCandidate => {
            net.isolate(follower);
            net.with_node(follower, |r| r.campaign().unwrap());
            net.recover();
            follower
        }
        Role::Learner => 4,
        Role::EmptyJoiner => 5,
    };
    watch.check(&net);
    (net, target)
}

/// Everything an `Err` must leave unchanged.
fn observe(n: &Node) -> (Status, u64, bool) {
    (
        n.raw.status(),
        n.raw.raft().raft_log().last_index(),
        n.raw.has_ready(),
    )
}

/// Messages one delivery may cause before it counts as a livelock.
const DELIVERY_CAP: usize = 20_000;

/// Delivers `msgs` and what follows, at most `cap` messages (a livelock is a
/// failure too).
fn deliver(net: &mut Network, msgs: Vec<Message>, cap: usize) {
    let mut queue: std::collections::VecDeque<Message> = msgs.into();
    let mut n = 0;
    while let Some(m) = queue.pop_front() {
        n += 1;
        assert!(n <= cap, "more than {cap} messages without quiescence");
        let Some(node) = net.peers.get_mut(&m.to) else {
            continue;
        };
        let _ = node.step(m);
        queue.extend(node.handle_ready());
    }
}

/// The invariants, per node always, cluster-wide while every message stepped
/// could have been sent by an honest node.
#[derive(Default)]
struct Watch {
    terms: BTreeMap<u64, u64>,
    /// node → index → term of its committed entries.
    committed: BTreeMap<u64, BTreeMap<u64, u64>>,
    leaders: BTreeMap<u64, u64>,
    all_committed: BTreeMap<u64, u64>,
    applied: BTreeMap<u64, (u64, Vec<u8>)>,
    forged: bool,
}

impl Watch {
    fn check(&mut self, net: &Network) {
        for (&id, n) in &net.peers {
            let r = n.raw.raft();
            let log = r.raft_log();
            let prev = self.terms.insert(id, r.term()).unwrap_or(0);
            assert!(r.term() >= prev, "node {id}: term {prev} -> {}", r.term());
            assert!(
                log.committed() <= log.last_index(),
                "node {id}: commit beyond log"
            );
            assert!(
                log.applied() <= log.committed(),
                "node {id}: applied beyond commit"
            );
            let mine = self.committed.entry(id).or_default();
            for i in log.first_index().saturating_sub(1).max(1)..=log.committed() {
                let t = log.term(i).unwrap();
                let want = *mine.entry(i).or_insert(t);
                assert_eq!(t, want, "node {id}: committed entry {i} changed term");
                if !self.forged {
                    let want = *self.all_committed.entry(i).or_insert(t);
                    assert_eq!(
                        t, want,
                        "node {id}: committed entry {i} differs from another node's"
                    );
                }
            }
            if self.forged {
                continue;
            }
            if r.state() == StateRole::Leader {
                let l = *self.leaders.entry(r.term()).or_insert(id);
                assert_eq!(l, id, "two leaders in term {}", r.term());
            }
            for a in &n.applied {
                let want = self
                    .applied
                    .entry(a.index)
                    .or_insert((a.term, a.data.clone()));
                assert_eq!(
                    (&want.0, &want.1),
                    (&a.term, &a.data),
                    "node {id}: applied a different entry at {}",
                    a.index
                );
            }
        }
    }
}

/// A real message, with one field made impossible; `None` when the damage
/// does not apply to this message.
fn damage(mut m: Message, kind: u8, k: u64, target: u64) -> Option<Message> {
    use MessageType::*;
    let ty = m.get_msg_type();
    let forwarded = matches!(ty, MsgPropose | MsgReadIndex);
    match kind {
        0 => m.term = if forwarded { 1 + k % 9 } else { 0 },
        1 => m.from = 0,
        2 if ty != MsgTransferLeader => m.from = target,
        3 => m.to = if k % 2 == 0 { 0 } else { target + 10 },
        4 => m.set_msg_type(
            [
                MsgHup,
                MsgBeat,
                MsgUnreachable,
                MsgSnapStatus,
                MsgCheckQuorum,
            ][(k % 5) as usize],
        ),
        5 if ty == MsgAppend && !m.get_entries().is_empty() => {
            let n = m.get_entries().len();
            let e = &mut m.mut_entries()[(k as usize) % n];
            e.index = e.index.wrapping_add(1 + k % 3);
        }
        6 if ty == MsgAppend && !m.get_entries().is_empty() => {
            let n = m.get_entries().len();
            let term = m.term;
            let e = &mut m.mut_entries()[(k as usize) % n];
            e.term = if k % 2 == 0 { 0 } else { term + 1 };
        }
        7 if ty == MsgAppend && m.get_entries().len() >= 2 => {
            let t = m.get_entries()[1].term;
            m.mut_entries()[1].term = 0;
            m.mut_entries()[0].term = t + 1;
        }
        8 if matches!(ty, MsgAppend | MsgRequestVote | MsgRequestPreVote) => {
            if m.index > 0 && k % 2 == 0 {
                m.log_term = 0;
            } else {
                m.log_term = m.term + 1 + k % 3;
            }
        }
        9 if ty == MsgSnapshot => {
            let term = m.term;
            let meta = m.mut_snapshot().mut_metadata();
            match k % 4 {
                0 => meta.index = 0,
                1 => meta.term = 0,
                2 => meta.mut_conf_state().voters.clear(),
                _ => meta.term = term + 1,
            }
        }
        10 if forwarded || ty == MsgReadIndexResp => m.mut_entries().clear(),
        11 if ty == MsgReadIndexResp => {
            let e = m.get_entries()[0].clone();
            m.mut_entries().push(e);
        }
        12 if ty == MsgAppend && !m.get_entries().is_empty() => {
            // The prev entry past the log with term 0: "matched" anything once.
            m.index = m.index.wrapping_add(100);
            m.log_term = 0;
        }
        13 if ty == MsgAppend => {
            let n = m.get_entries().len();
            if n == 0 {
                return None;
            }
            m.mut_entries().swap(0, n - 1);
            if n == 1 {
                m.mut_entries()[0].index += 1;
            }
        }
        _ => return None,
    }
    Some(m)
}

/// Types a node may send to any peer, whose replay to another peer is a
/// message the sender could have sent it.
fn may_retarget(ty: MessageType) -> bool {
    use MessageType::*;
    matches!(
        ty,
        MsgAppend
            | MsgSnapshot
            | MsgRequestVote
            | MsgRequestPreVote
            | MsgTimeoutNow
            | MsgPropose
            | MsgTransferLeader
    )
}

/// Counts of what the cases did, printed with `RAFT_FUZZ_VERBOSE`.
#[derive(Debug, Default)]
struct Stats {
    cases: [usize; 6],
    arbitrary_refused: usize,
    arbitrary_accepted: usize,
    damaged: usize,
    damage_skipped: usize,
    replayed: usize,
    ticks: usize,
}

static STATS: std::sync::Mutex<Option<Stats>> = std::sync::Mutex::new(None);

fn count(f: impl FnOnce(&mut Stats)) {
    let mut s = STATS.lock().unwrap_or_else(|e| e.into_inner());
    f(s.get_or_insert_with(Stats::default));
}

fn run_case(c: &Case) {
    count(|s| s.cases[ROLES.iter().position(|&r| r == c.role).unwrap()] += 1);
    let mut watch = Watch::default();
    let (mut net, target) = fixture(c.role, c.flags, c.proposals, &mut watch);
    let real = std::mem::take(&mut net.delivered);
    assert!(!real.is_empty());
    for input in &c.inputs {
        match input {
            Input::Tick { node, n } => {
                count(|s| s.ticks += 1);
                for _ in 0..*n {
                    tick(&mut net, u64::from(*node));
                }
            }
            Input::Arbitrary(a) => {
                let m = a.build(net.node(target));
                if step_into(&mut net, target, m).is_ok() {
                    watch.forged = true;
                    count(|s| s.arbitrary_accepted += 1);
                } else {
                    count(|s| s.arbitrary_refused += 1);
                }
            }
            Input::Damage { pick, kind, k } => {
                let mut m = real[pick % real.len()].clone();
                m.to = target;
                if m.from == target {
                    m.from = if target == 1 { 2 } else { 1 };
                }
                // A damage that does not apply to this type falls back to
                // one that applies to every type.
                let generic = (*k % 5) as u8;
                let damaged = damage(m.clone(), *kind, *k, target);
                let Some(m) = damaged.or_else(|| damage(m, generic, *k, target)) else {
                    count(|s| s.damage_skipped += 1);
                    continue;
                };
                count(|s| s.damaged += 1);
                let desc = format!("{m:?}");
                let r = step_into(&mut net, target, m);
                assert!(
                    matches!(
                        r,
                        Err(Error::InvalidMessage { .. }
                            | Error::StepLocalMsg
                            | Error::StepPeerNotFound)
                    ),
                    "damaged message accepted ({r:?}): {desc}"
                );
            }
            Input::Replay { pick, to } => {
                let mut m = real[pick % real.len()].clone();
                if let Some(to) = to {
                    let to = u64::from(*to);
                    if !may_retarget(m.get_msg_type()) || to == m.from {
                        continue;
                    }
                    m.to = to;
                }
                deliver(&mut net, vec![m], DELIVERY_CAP);
                count(|s| s.replayed += 1);
            }
        }
        watch.check(&net);
    }
    // The cluster runs on, healed.
    net.recover();
    for _ in 0..30 {
        for id in 1..=5 {
            tick(&mut net, id);
        }
        watch.check(&net);
    }
}

/// Ticks node `id` once and delivers what follows, bounded (the harness's
/// own `Network::tick` delivers to quiescence however long that takes).
fn tick(net: &mut Network, id: u64) {
    let node = net.node_mut(id);
    node.raw.tick();
    let out = node.handle_ready();
    deliver(net, out, DELIVERY_CAP);
}

/// Steps `m` into `target`: an error must leave it unchanged; what it accepts
/// is persisted, applied and answered.
fn step_into(net: &mut Network, target: u64, m: Message) -> raft::Result<()> {
    let node = net.node_mut(target);
    let before = observe(node);
    let desc = format!("{m:?}");
    let r = node.step(m);
    if r.is_err() {
        assert_eq!(observe(node), before, "refused ({r:?}) but changed: {desc}");
        return r;
    }
    let out = node.handle_ready();
    deliver(net, out, DELIVERY_CAP);
    r
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Runs `cases` cases from `seed`; panics with the minimal failing case.
fn fuzz_batch(seed: u64, cases: u32) {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = PtConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..PtConfig::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let result = runner.run(&case(), |c| {
        run_case(&c);
        Ok(())
    });
    if let Err(e) = result {
        panic!("fuzz failed (replay with RAFT_FUZZ_SEED={seed} RAFT_FUZZ_CASES={cases}): {e}");
    }
}

/// `RAFT_FUZZ_CASES` cases from `RAFT_FUZZ_SEED`; with `RAFT_FUZZ_SECS`,
/// batches of that many cases from successive seeds until the time is up.
#[test]
fn fuzz_step_every_role_2ac() {
    let cases = env_u64("RAFT_FUZZ_CASES", 500) as u32;
    let seed = env_u64("RAFT_FUZZ_SEED", 0x7E55_E7A0);
    let secs = env_u64("RAFT_FUZZ_SECS", 0);
    let start = std::time::Instant::now();
    let mut batches = 0u64;
    loop {
        fuzz_batch(seed + batches, cases);
        batches += 1;
        if start.elapsed().as_secs() >= secs {
            break;
        }
    }
    if std::env::var("RAFT_FUZZ_VERBOSE").is_ok() {
        eprintln!(
            "fuzz: seeds {seed}..{}, {batches} batches of {cases} cases in {:.0?}: {:?}",
            seed + batches,
            start.elapsed(),
            STATS.lock().unwrap()
        );
    }
}
