//! What the clients did: every operation with its call and return time (nanoseconds since the
//! run started) and its [`Outcome`], turned into a checker history, counted, and checked for
//! lost acknowledged writes.
//!
//! Classification (the clients decide it; see `workload`):
//! - `Ok`: the store answered; the output is what it said.
//! - `Failed`: the write was definitely not applied (every attempt was refused before it could
//!   be proposed, or never reached a store), or a read failed (a read has no effect). Dropped
//!   from the checked history.
//! - `Unknown`: a write that may have been applied (a timeout, a lost connection or an answer
//!   that does not rule it out). Checked as an operation that may take effect at any time after
//!   its call, or never.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use checker::{Input, Operation, Output};

/// How a client reached the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    /// The gRPC API through `ClusterClient`.
    Grpc,
    /// The HTTP gateway of a store.
    Http,
    /// The final reads after healing.
    Final,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok(Output),
    /// Definitely without effect.
    Failed(String),
    /// May have taken effect.
    Unknown(String),
}

/// One operation as recorded.
#[derive(Clone, Debug)]
pub struct Record {
    /// The client.
    pub client: usize,
    /// How it was sent.
    pub via: Via,
    /// The key.
    pub key: Vec<u8>,
    /// The request.
    pub input: Input,
    /// Call time, ns since the start.
    pub call: u64,
    /// Return time, ns since the start.
    pub ret: u64,
    /// How it ended.
    pub outcome: Outcome,
}

/// Collects records from every client.
pub struct Recorder {
    start: Instant,
    records: Mutex<Vec<Record>>,
}

impl Recorder {
    /// A recorder whose clock starts now.
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            records: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the start.
    pub fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Adds one finished operation.
    pub fn push(&self, record: Record) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(record);
    }

    /// Everything recorded so far.
    pub fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

/// The checker's history: answered and unknown operations; failed ones had no effect.
pub fn to_history(records: &[Record]) -> Vec<Operation> {
    records
        .iter()
        .filter_map(|r| {
            let output = match &r.outcome {
                Outcome::Ok(o) => Some(o.clone()),
                Outcome::Unknown(_) => None,
                Outcome::Failed(_) => return None,
            };
            Some(Operation {
                client: r.client,
                key: r.key.clone(),
                input: r.input.clone(),
                output,
                call: r.call,
                ret: r.ret,
            })
        })
        .collect()
}

fn kind(input: &Input) -> &'static str {
    match input {
        Input::Get => "get",
        Input::Put(_) => "put",
        Input::Delete => "delete",
        Input::Cas { .. } => "cas",
    }
}

/// Operations counted by kind and outcome, and by how they were sent.
#[derive(Default, Debug)]
pub struct Counts {
    /// (kind, outcome) → count; outcome is `ok`, `failed` or `unknown`.
    pub by_kind: BTreeMap<(&'static str, &'static str), usize>,
    /// How many went over gRPC, HTTP, and final reads.
    pub by_via: BTreeMap<Via, usize>,
    /// All operations.
    pub total: usize,
    /// Why operations failed or ended unknown: (outcome, reason with digits masked) → count.
    pub reasons: BTreeMap<(&'static str, String), usize>,
}

/// A reason without its numbers (ids, addresses, times), so alike reasons count together.
fn reason_class(why: &str) -> String {
    let masked: String = why
        .chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect();
    let mut out = String::new();
    for c in masked.chars() {
        if !(c == '#' && out.ends_with('#')) {
            out.push(c);
        }
    }
    out.chars().take(160).collect()
}

impl Counts {
    /// Counts `records`.
    pub fn of(records: &[Record]) -> Counts {
        let mut c = Counts::default();
        for r in records {
            let outcome = match &r.outcome {
                Outcome::Ok(_) => "ok",
                Outcome::Failed(why) => {
                    *c.reasons.entry(("failed", reason_class(why))).or_default() += 1;
                    "failed"
                }
                Outcome::Unknown(why) => {
                    *c.reasons.entry(("unknown", reason_class(why))).or_default() += 1;
                    "unknown"
                }
            };
            *c.by_kind.entry((kind(&r.input), outcome)).or_default() += 1;
            *c.by_via.entry(r.via).or_default() += 1;
            c.total += 1;
        }
        c
    }

    /// The count of `kind` operations that ended with `outcome`.
    pub fn get(&self, kind: &str, outcome: &str) -> usize {
        self.by_kind
            .iter()
            .filter(|((k, o), _)| *k == kind && *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ops", self.total)?;
        for kind in ["get", "put", "delete", "cas"] {
            let (ok, failed, unknown) = (
                self.get(kind, "ok"),
                self.get(kind, "failed"),
                self.get(kind, "unknown"),
            );
            if ok + failed + unknown > 0 {
                write!(
                    f,
                    "; {kind} {}: ok {ok} failed {failed} unknown {unknown}",
                    ok + failed + unknown
                )?;
            }
        }
        let via: Vec<String> = self
            .by_via
            .iter()
            .map(|(v, n)| format!("{v:?} {n}").to_lowercase())
            .collect();
        write!(f, " (via {})", via.join(", "))
    }
}

impl Counts {
    /// The most common reasons for failed and unknown outcomes, one per line.
    pub fn top_reasons(&self, n: usize) -> String {
        let mut all: Vec<(&(&'static str, String), &usize)> = self.reasons.iter().collect();
        all.sort_by(|a, b| b.1.cmp(a.1));
        all.iter()
            .take(n)
            .map(|((outcome, why), count)| format!("  {count:5} {outcome}: {why}\n"))
            .collect()
    }
}

/// Acknowledged writes a final read does not show.
#[derive(Debug)]
pub struct LostWrites {
    /// The key.
    pub key: Vec<u8>,
    /// What the final read saw.
    pub seen: Option<Vec<u8>>,
    /// The latest acknowledged writes (none of them completed before another acknowledged write
    /// started): the final value should be one of theirs, or an unknown write's.
    pub lost: Vec<Operation>,
}

impl fmt::Display for LostWrites {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seen = self.seen.as_deref().map_or_else(
            || "absent".to_string(),
            |v| format!("{:?}", String::from_utf8_lossy(v)),
        );
        writeln!(
            f,
            "key {:?}: the final read saw {seen}; lost acknowledged writes:",
            String::from_utf8_lossy(&self.key)
        )?;
        for op in &self.lost {
            writeln!(f, "  {op}")?;
        }
        Ok(())
    }
}

/// The value `op` leaves if it writes one unconditionally.
fn written(op: &Operation) -> Option<Option<Vec<u8>>> {
    match &op.input {
        Input::Put(v) => Some(Some(v.clone())),
        Input::Delete => Some(None),
        Input::Cas { new, .. } => match &op.output {
            Some(Output::Cas {
                succeeded: true, ..
            })
            | None => Some(Some(new.clone())),
            _ => None,
        },
        Input::Get => None,
    }
}

/// Checks that each key's final value (`finals`) is the value of one of its latest acknowledged
/// writes, or of a write whose outcome is unknown (it may have applied last). Keys without
/// acknowledged writes cannot lose any.
pub fn lost_writes(
    history: &[Operation],
    finals: &BTreeMap<Vec<u8>, Option<Vec<u8>>>,
) -> Vec<LostWrites> {
    let mut out = Vec::new();
    for (key, ops) in checker::by_key(history) {
        let Some(seen) = finals.get(key) else {
            continue;
        };
        let acked: Vec<&Operation> = ops
            .iter()
            .filter(|o| o.output.is_some() && written(o).is_some())
            .collect();
        // Latest: no acknowledged write started after it returned.
        let latest: Vec<&Operation> = acked
            .iter()
            .filter(|w| !acked.iter().any(|later| later.call > w.ret))
            .copied()
            .collect();
        if latest.is_empty() {
            continue;
        }
        let explained = latest
            .iter()
            .chain(
                ops.iter()
                    .filter(|o| o.output.is_none())
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .any(|w| written(w).as_ref() == Some(seen));
        if !explained {
            out.push(LostWrites {
                key: key.to_vec(),
                seen: seen.clone(),
                lost: latest.into_iter().cloned().collect(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: Option<&str>, out: Option<Output>, call: u64, ret: u64) -> Operation {
        Operation {
            client: 0,
            key: b"k".to_vec(),
            input: match v {
                Some(v) => Input::Put(v.as_bytes().to_vec()),
                None => Input::Delete,
            },
            output: out,
            call,
            ret,
        }
    }

    fn finals(v: Option<&str>) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        BTreeMap::from([(b"k".to_vec(), v.map(|v| v.as_bytes().to_vec()))])
    }

    #[test]
    fn final_value_must_be_a_latest_acknowledged_write_3b() {
        let ok = Some(Output::Written);
        let h = vec![
            w(Some("a"), ok.clone(), 0, 1),
            w(Some("b"), ok.clone(), 2, 3),
        ];
        assert!(lost_writes(&h, &finals(Some("b"))).is_empty());
        let lost = lost_writes(&h, &finals(Some("a")));
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].lost, [h[1].clone()]);
        assert_eq!(lost_writes(&h, &finals(None)).len(), 1);
        // Concurrent acknowledged writes: either may be last.
        let h = vec![
            w(Some("a"), ok.clone(), 0, 5),
            w(Some("b"), ok.clone(), 1, 6),
        ];
        assert!(lost_writes(&h, &finals(Some("a"))).is_empty());
        assert!(lost_writes(&h, &finals(Some("b"))).is_empty());
        // An unknown write may have applied last; an acknowledged delete leaves nothing.
        let h = vec![
            w(Some("a"), ok.clone(), 0, 1),
            w(Some("u"), None, 2, 0),
            w(None, ok, 3, 4),
        ];
        assert!(lost_writes(&h, &finals(Some("u"))).is_empty());
        assert!(lost_writes(&h, &finals(None)).is_empty());
        assert_eq!(lost_writes(&h, &finals(Some("a"))).len(), 1);
    }
}
