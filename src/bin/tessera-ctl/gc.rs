//! `tessera-ctl gc --safe-point TS` (or `--life-time SECS`: the safe point that long ago):
//! garbage-collects the cluster's old MVCC versions.
//!
//! ```text
//!   raise the scheduler's safe point to TS ─► wait until every store that answers enforces it
//!     (refuses reads below it) ─► KvGc region by region, resolving the locks at or below TS
//! ```
//!
//! After it, every read at or above the safe point sees what it saw before; a read below it is
//! refused with a clear error. A store that does not answer is skipped: it reads the safe point
//! from the scheduler before it serves again.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::admin::http_get;

/// How long stores get to learn a new safe point.
const LEARN_TIMEOUT: Duration = Duration::from_secs(30);

/// The safe point `addr`'s `/status` says it enforces; `None` if it does not answer.
fn enforced(addr: &str) -> Option<u64> {
    let (code, body) = http_get(addr, "/status").ok()?;
    let doc: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
    doc["gc_safe_point"].as_u64()
}

/// Waits until every store that answers enforces `safe_point`; the stores skipped.
fn wait_for_stores(rpc: &scheduler_client::RpcClient, safe_point: u64) -> Result<Vec<u64>, String> {
    let stores = rpc.get_all_stores(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + LEARN_TIMEOUT;
    let mut skipped = Vec::new();
    for s in stores {
        loop {
            match enforced(&s.status_address) {
                Some(sp) if sp >= safe_point => break,
                None => {
                    eprintln!(
                        "store {} ({}) does not answer: skipped (it reads the safe point before \
                         it serves again)",
                        s.id, s.status_address
                    );
                    skipped.push(s.id);
                    break;
                }
                Some(sp) if Instant::now() >= deadline => {
                    return Err(format!(
                        "store {} still enforces safe point {sp} after {LEARN_TIMEOUT:?}, not \
                         {safe_point}: nothing was collected",
                        s.id
                    ))
                }
                Some(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
    Ok(skipped)
}

/// Where the safe point is.
#[derive(Clone, Copy, Debug)]
pub enum SafePoint {
    /// This timestamp.
    At(u64),
    /// This many seconds before now.
    Ago(u64),
}

/// Runs the GC at `safe_point` on the cluster of `scheduler`; the exit code.
pub async fn run(scheduler: &str, safe_point: SafePoint, json: bool) -> u8 {
    match gc(scheduler, safe_point, json).await {
        Ok(()) => 0,
        Err((code, e)) => {
            eprintln!("error: {e}");
            code
        }
    }
}

async fn gc(scheduler: &str, safe_point: SafePoint, json: bool) -> Result<(), (u8, String)> {
    let unreachable = |e: String| (4, e);
    let (rpc, _, txn) = crate::backup::connect(scheduler)
        .await
        .map_err(unreachable)?;
    let now = txn
        .timestamp()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let safe_point = match safe_point {
        SafePoint::At(ts) => ts,
        SafePoint::Ago(secs) => {
            let ms = codec::ts::physical_ms(now).saturating_sub(secs.saturating_mul(1000));
            codec::ts::compose_ts(ms, 0)
        }
    };
    if safe_point == 0 || safe_point > now {
        return Err((
            2,
            format!(
                "--safe-point {safe_point} is not a past timestamp (now is {now}): reads and \
                 transactions at or above it must still be possible"
            ),
        ));
    }
    let started = Instant::now();
    let r = rpc.clone();
    let (in_force, skipped) = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let in_force = r
            .update_gc_safe_point(safe_point)
            .map_err(|e| e.to_string())?;
        Ok((in_force, wait_for_stores(&r, in_force)?))
    })
    .await
    .map_err(|e| unreachable(e.to_string()))?
    .map_err(unreachable)?;
    let stats = txn.gc(in_force).await.map_err(|e| (3, e.to_string()))?;
    let secs = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({"safe_point": in_force, "regions": stats.regions,
                "keys": stats.keys, "versions": stats.versions, "locks": stats.locks,
                "skipped_stores": skipped, "seconds": secs})
        );
    } else {
        println!(
            "GC at safe point {in_force}: {} regions, {} keys looked at, {} versions removed, \
             {} locks resolved first, {secs:.1} s",
            stats.regions, stats.keys, stats.versions, stats.locks
        );
    }
    Ok(())
}
