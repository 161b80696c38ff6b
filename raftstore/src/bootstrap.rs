//! Store and cluster bootstrap on the engines: the store ident, and the first region written
//! under the prepare-bootstrap key until the scheduler confirms the cluster bootstrap.
//!
//! ```text
//! bootstrap_store            STORE_IDENT_KEY = { cluster_id, store_id }
//! prepare_bootstrap_cluster  PREPARE_BOOTSTRAP_KEY = region; region, raft and apply states
//! scheduler.bootstrap(..)    ok  -> clear_prepare_bootstrap_key
//!                            already bootstrapped by another store -> clear_prepare_bootstrap
//! ```
//! A crash between the steps leaves the prepare key behind; the next start resumes from it.

use kv::{keys, Engines, WriteBatch};
use proto::metapb;
use proto::raft_serverpb::{PeerState, RegionLocalState, StoreIdent};

use crate::error::{Error, Result};
use crate::peer_storage::{initial_apply_state, initial_raft_state};

/// The first region of a cluster: the whole key space, one peer on `store_id`, epoch 1/1.
pub fn new_first_region(store_id: u64, region_id: u64, peer_id: u64) -> metapb::Region {
    metapb::Region {
        id: region_id,
        start_key: vec![],
        end_key: vec![],
        region_epoch: Some(metapb::RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![metapb::Peer {
            id: peer_id,
            store_id,
            role: metapb::PeerRole::Voter as i32,
        }],
    }
}

/// The store ident, if this store was bootstrapped.
///
/// # Errors
/// Engine failures.
pub fn load_store_ident(engines: &Engines) -> Result<Option<StoreIdent>> {
    Ok(kv::engine::get_msg(&engines.kv, keys::STORE_IDENT_KEY)?)
}

/// Records the store's identity in an empty kv engine.
///
/// # Errors
/// [`Error::Other`] when the engine already belongs to a store or holds data.
pub fn bootstrap_store(engines: &Engines, cluster_id: u64, store_id: u64) -> Result<()> {
    if let Some(ident) = load_store_ident(engines)? {
        return Err(Error::Other(format!(
            "engine at {} already belongs to store {} of cluster {}",
            engines.kv_path.display(),
            ident.store_id,
            ident.cluster_id
        )));
    }
    let mut wb = WriteBatch::new(&engines.kv);
    wb.put_msg(
        keys::STORE_IDENT_KEY,
        &StoreIdent {
            cluster_id,
            store_id,
        },
    );
    wb.write(true)?;
    Ok(())
}

/// Writes `region` as a bootstrapped region of this store (raft, apply and region states at the
/// initial index) and remembers it under the prepare-bootstrap key.
///
/// # Errors
/// Engine failures.
pub fn prepare_bootstrap_cluster(engines: &Engines, region: &metapb::Region) -> Result<()> {
    let mut kv_wb = WriteBatch::new(&engines.kv);
    kv_wb.put_msg(keys::PREPARE_BOOTSTRAP_KEY, region);
    write_initial_region(engines, region, &mut kv_wb)?;
    kv_wb.write(true)?;
    Ok(())
}

/// Writes a region's initial states without the prepare-bootstrap key: how the test cluster
/// bootstraps every store with the same multi-peer first region.
///
/// # Errors
/// Engine failures.
pub fn write_initial_region(
    engines: &Engines,
    region: &metapb::Region,
    kv_wb: &mut WriteBatch,
) -> Result<()> {
    let mut raft_wb = raftlog::LogBatch::new();
    raft_wb.put_state(
        region.id,
        prost::Message::encode_to_vec(&initial_raft_state()),
    );
    write_raft_log(engines, &raft_wb)?;
    kv_wb.put_msg(
        &keys::region_state_key(region.id),
        &RegionLocalState {
            state: PeerState::Normal as i32,
            region: Some(region.clone()),
        },
    );
    kv_wb.put_msg(&keys::apply_state_key(region.id), &initial_apply_state());
    Ok(())
}

/// The region a previous start prepared but did not finish bootstrapping, if any.
///
/// # Errors
/// Engine failures.
pub fn load_prepared_region(engines: &Engines) -> Result<Option<metapb::Region>> {
    Ok(kv::engine::get_msg(
        &engines.kv,
        keys::PREPARE_BOOTSTRAP_KEY,
    )?)
}

/// Writes `batch` to the raft-log engine, synced.
fn write_raft_log(engines: &Engines, batch: &raftlog::LogBatch) -> Result<()> {
    engines
        .raft_log
        .write(batch, true)
        .map_err(crate::peer_storage::raft_log_error)
}

/// The scheduler accepted our bootstrap: forget the prepare key.
///
/// # Errors
/// Engine failures.
pub fn clear_prepare_bootstrap_key(engines: &Engines) -> Result<()> {
    let mut wb = WriteBatch::new(&engines.kv);
    wb.delete(keys::PREPARE_BOOTSTRAP_KEY);
    wb.write(true)?;
    Ok(())
}

/// Another store bootstrapped the cluster first: remove our prepared region entirely.
///
/// # Errors
/// Engine failures.
pub fn clear_prepare_bootstrap(engines: &Engines, region_id: u64) -> Result<()> {
    let mut raft_wb = raftlog::LogBatch::new();
    raft_wb.delete_state(region_id);
    write_raft_log(engines, &raft_wb)?;
    let mut wb = WriteBatch::new(&engines.kv);
    wb.delete(keys::PREPARE_BOOTSTRAP_KEY);
    wb.delete(&keys::region_state_key(region_id));
    wb.delete(&keys::apply_state_key(region_id));
    wb.write(true)?;
    Ok(())
}

/// Every region state recorded on this store, in region id order.
///
/// # Errors
/// Engine failures and undecodable states.
pub fn load_region_states(engines: &Engines) -> Result<Vec<RegionLocalState>> {
    let snap = kv::EngineSnapshot::new(&engines.kv);
    let mut it = snap.iter_cf(
        kv::Cf::Default,
        keys::REGION_META_MIN_KEY.to_vec(),
        keys::REGION_META_MAX_KEY.to_vec(),
    )?;
    it.seek_to_first();
    let mut out = Vec::new();
    while it.valid() {
        let (Some(k), Some(v)) = (it.key(), it.value()) else {
            break;
        };
        if let Some(region_id) = keys::region_id_of_state_key(k) {
            let st = <RegionLocalState as prost::Message>::decode(v).map_err(|e| {
                Error::Other(format!("region {region_id}: corrupt region state: {e}"))
            })?;
            out.push(st);
        }
        it.next();
    }
    it.status().map_err(kv::Error::from)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_then_load_then_clear_2b() {
        let dir = tempfile::tempdir().unwrap();
        let engines = Engines::open(dir.path()).unwrap();
        bootstrap_store(&engines, 9, 1).unwrap();
        assert!(bootstrap_store(&engines, 9, 1).is_err());
        assert_eq!(load_store_ident(&engines).unwrap().unwrap().store_id, 1);
        let region = new_first_region(1, 2, 3);
        prepare_bootstrap_cluster(&engines, &region).unwrap();
        assert_eq!(
            load_prepared_region(&engines).unwrap(),
            Some(region.clone())
        );
        let states = load_region_states(&engines).unwrap();
        assert_eq!(states.len(), 1);
        assert_eq!(states[0].region, Some(region.clone()));
        clear_prepare_bootstrap(&engines, 2).unwrap();
        assert!(load_region_states(&engines).unwrap().is_empty());
        assert!(load_prepared_region(&engines).unwrap().is_none());
    }
}
