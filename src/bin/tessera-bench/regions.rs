//! `--regions N`: before the load, split the key space into `N` regions of equal key counts
//! (`SplitRegion` on each region's leader) and wait until the scheduler's balance-leader has
//! spread their leaders over the stores, so that every store leads a share of the writes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use scheduler_client::SchedulerClient;
use tessera_client::cluster::ClusterClient;

use crate::load::key;

/// How long the leaders get to spread before the load starts anyway.
const SPREAD_TIMEOUT: Duration = Duration::from_secs(90);

/// The first key of each region but the first.
fn split_keys(keys: u64, regions: usize) -> Vec<Vec<u8>> {
    (1..regions as u64)
        .map(|i| key(i * keys / regions as u64))
        .collect()
}

/// Splits `[key(0), key(keys))` into `regions` regions and waits (up to [`SPREAD_TIMEOUT`]) for
/// their leaders to spread; prints the leaders per store (as JSON with `json`).
pub async fn presplit(
    client: &ClusterClient,
    keys: u64,
    regions: usize,
    json: bool,
) -> anyhow::Result<()> {
    let began = Instant::now();
    let splits = split_keys(keys, regions);
    for k in &splits {
        client
            .split_region(k)
            .await
            .with_context(|| format!("splitting at {:?}", String::from_utf8_lossy(k)))?;
    }
    println!(
        "split into {regions} regions in {:.1?}; waiting for their leaders to spread",
        began.elapsed()
    );
    let scheduler = client.scheduler();
    let mut firsts = vec![Vec::new()];
    firsts.extend(splits);
    let stores = scheduler_stores(&scheduler, &firsts).await?;
    let deadline = Instant::now() + SPREAD_TIMEOUT;
    let leaders = loop {
        let leaders = leaders_per_store(&scheduler, &firsts).await?;
        let counts: Vec<usize> = leaders.values().copied().collect();
        let led: usize = counts.iter().sum();
        let spread = counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0);
        // Every store leads its share, give or take one.
        if led == regions && leaders.len() == stores && spread <= 1 {
            break leaders;
        }
        if Instant::now() >= deadline {
            println!("leaders not spread after {SPREAD_TIMEOUT:?}; running anyway");
            break leaders;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let per_store: Vec<String> = leaders
        .iter()
        .map(|(s, n)| format!("\"{s}\":{n}"))
        .collect();
    println!(
        "leaders per store after {:.1?}: {leaders:?}",
        began.elapsed()
    );
    if json {
        println!(
            "{{\"regions\":{regions},\"leaders_per_store\":{{{}}}}}",
            per_store.join(",")
        );
    }
    Ok(())
}

/// How many of the regions starting at `firsts` each store leads, as the scheduler knows it.
async fn leaders_per_store(
    scheduler: &Arc<dyn SchedulerClient>,
    firsts: &[Vec<u8>],
) -> anyhow::Result<BTreeMap<u64, usize>> {
    let (scheduler, firsts) = (scheduler.clone(), firsts.to_vec());
    tokio::task::spawn_blocking(move || {
        let mut out = BTreeMap::new();
        for k in &firsts {
            let (_, leader) = scheduler.get_region(k)?;
            if let Some(leader) = leader {
                *out.entry(leader.store_id).or_insert(0) += 1;
            }
        }
        Ok(out)
    })
    .await?
}

/// The number of stores holding a peer of the regions starting at `firsts`.
async fn scheduler_stores(
    scheduler: &Arc<dyn SchedulerClient>,
    firsts: &[Vec<u8>],
) -> anyhow::Result<usize> {
    let (scheduler, first) = (scheduler.clone(), firsts[0].clone());
    tokio::task::spawn_blocking(move || {
        let (region, _) = scheduler.get_region(&first)?;
        Ok(region.peers.len())
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keys_cut_the_key_space_evenly_1() {
        let keys = split_keys(100_000, 4);
        assert_eq!(keys, vec![key(25_000), key(50_000), key(75_000)]);
        assert!(split_keys(100, 1).is_empty());
    }
}
