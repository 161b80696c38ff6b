//! The bank's tasks: transfer clients and the snapshot auditor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tessera_client::txn::TxnError;

use super::{balance, Abandon, Outcome, Rng, Shared, Snapshot, Transfer};

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Runs transfers until stopped; returns every transfer that got as far as its prewrite.
pub(super) async fn run_client(shared: Arc<Shared>, id: usize) -> Vec<Transfer> {
    let mut rng = Rng::new(
        shared
            .config
            .seed
            .wrapping_add((id as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)),
    );
    let n = shared.keys.len() as u64;
    let every = shared.config.abandon_every;
    let stages = &shared.config.abandon_stages;
    let mut log = Vec::new();
    let mut count = 0u64;
    // A walk-away waits for a transfer that gets as far as its stage, so every run that has
    // enough transfers has some of both kinds.
    let mut abandon = None;
    while !shared.stop.load(Ordering::SeqCst) {
        count += 1;
        let from = rng.below(n) as usize;
        let to = ((from as u64 + 1 + rng.below(n - 1)) % n) as usize;
        if every > 0 && count % every == 0 {
            let turn = (count / every - 1) as usize;
            abandon = Some(stages[turn % stages.len()]);
        }
        if let Some(t) = transfer(&shared, &mut rng, from, to, &mut abandon).await {
            log.push(t);
        }
    }
    log
}

/// The balance of account `i` read by `txn`; `None` after counting or reporting why not.
async fn read(shared: &Shared, txn: &mut tessera_client::txn::Txn, i: usize) -> Option<u64> {
    match txn.get(&shared.keys[i]).await {
        Ok(Some(v)) => match balance(&v) {
            Some(b) => Some(b),
            None => {
                shared.violation(format!(
                    "account {i} holds {:?}, not a balance, at {}",
                    String::from_utf8_lossy(&v),
                    txn.start_ts()
                ));
                None
            }
        },
        Ok(None) => {
            shared.violation(format!("account {i} is missing at {}", txn.start_ts()));
            None
        }
        Err(e) => {
            tracing::debug!("bank read of account {i}: {e}");
            shared.check_error(&e);
            if let TxnError::Aborted(why) = &e {
                // A read's only key error is a lock, which the client resolves.
                shared.violation(format!(
                    "a read of account {i} at {} got another key error: {why}",
                    txn.start_ts()
                ));
            }
            None
        }
    }
}

/// One transfer from `from` to `to`; `None` if nothing was written. Walks away at the stage
/// `abandon` names, if it gets there (and then clears it).
async fn transfer(
    shared: &Shared,
    rng: &mut Rng,
    from: usize,
    to: usize,
    abandon: &mut Option<Abandon>,
) -> Option<Transfer> {
    let c = &shared.counters;
    let Ok(mut txn) = shared.client.begin().await else {
        bump(&c.read_failures);
        return None;
    };
    let (Some(a), Some(b)) = (
        read(shared, &mut txn, from).await,
        read(shared, &mut txn, to).await,
    ) else {
        bump(&c.read_failures);
        return None;
    };
    if a == 0 {
        bump(&c.empty);
        return None;
    }
    let amount = 1 + rng.below(a.min(shared.config.max_amount));
    let mut t = Transfer {
        start_ts: txn.start_ts(),
        from,
        to,
        amount,
        read: (a, b),
        outcome: Outcome::Aborted,
        abandoned: None,
    };
    txn.put(&shared.keys[from], t.wrote(from).to_string().as_bytes());
    txn.put(&shared.keys[to], t.wrote(to).to_string().as_bytes());
    let prewritten = match txn.prewrite().await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(start_ts = t.start_ts, "bank prewrite: {e}");
            if let TxnError::Aborted(why) = &e {
                // A prewrite's only key errors are a conflict and a lock.
                shared.violation(format!(
                    "transfer {}: the prewrite got another key error: {why}",
                    t.start_ts
                ));
            }
            shared.not_committed(&e);
            return Some(t);
        }
    };
    if *abandon == Some(Abandon::AfterPrewrite) {
        // Never committed: its locks stay until someone finds them expired.
        t.abandoned = abandon.take();
        bump(&c.walked_away);
        return Some(t);
    }
    if *abandon == Some(Abandon::DuringCommit) {
        // Sends the primary's commit and never learns the answer (the locks of the secondary
        // stay, committed or not): the audit must ask the primary what became of it.
        let _ = prewritten.commit_primary().await;
        t.abandoned = abandon.take();
        t.outcome = Outcome::Unknown;
        bump(&c.unknown);
        return Some(t);
    }
    let committed = match prewritten.commit_primary().await {
        Ok(committed) => committed,
        Err(e) => {
            tracing::debug!(start_ts = t.start_ts, "bank commit: {e}");
            if e.is_undetermined() {
                t.outcome = Outcome::Unknown;
                bump(&c.unknown);
            } else {
                shared.not_committed(&e);
            }
            return Some(t);
        }
    };
    t.outcome = Outcome::Committed(committed.commit_ts());
    bump(&c.committed);
    if *abandon == Some(Abandon::AfterPrimary) {
        // Committed; the secondary's lock waits for someone to finish it.
        t.abandoned = abandon.take();
        return Some(t);
    }
    match committed.commit_secondaries().await {
        Ok(_) => {}
        Err(TxnError::Aborted(why)) => shared.violation(format!(
            "transfer {}: the secondary was refused after the primary committed: {why}",
            t.start_ts
        )),
        // Committed all the same; whoever meets the secondary's lock finishes it.
        Err(e) => tracing::debug!(start_ts = t.start_ts, "bank secondary commit: {e}"),
    }
    Some(t)
}

/// Reads every account at one fresh timestamp until stopped; each read that completes must
/// add up to the opening total. Returns every complete snapshot.
pub(super) async fn run_auditor(shared: Arc<Shared>) -> Vec<Snapshot> {
    let c = &shared.counters;
    let mut snapshots = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match snapshot(&shared).await {
            Some(s) => {
                let total: u64 = s.balances.iter().sum();
                if total != shared.total() {
                    shared.violation(format!(
                        "snapshot at {}: balances {:?} add up to {total}, not {}",
                        s.ts,
                        s.balances,
                        shared.total()
                    ));
                }
                bump(&c.snapshots);
                snapshots.push(s);
            }
            None => bump(&c.snapshot_failures),
        }
        // The auditor checks; it is not the load.
        tokio::time::sleep(shared.config.auditor_pause).await;
    }
    snapshots
}

/// Every account's balance at one fresh timestamp, or `None` if one could not be read.
pub(super) async fn snapshot(shared: &Shared) -> Option<Snapshot> {
    let mut txn = shared.client.begin().await.ok()?;
    let mut balances = Vec::with_capacity(shared.keys.len());
    for i in 0..shared.keys.len() {
        balances.push(read(shared, &mut txn, i).await?);
    }
    Some(Snapshot {
        ts: txn.start_ts(),
        balances,
    })
}
