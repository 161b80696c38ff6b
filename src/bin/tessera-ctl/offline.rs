//! `raft-state` and `raft-log`: what a stopped store keeps of one region, read from its data
//! directory (the store must be stopped: its engines take a lock on open).
//!
//! The directory is the server's `data_dir` (its engines are under `store/`) or the engines'
//! directory itself. The raft-log engine (RocksDB or files) is found by what is there.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use kv::{keys, Engines, RaftLogKind};
use prost::Message as _;
use proto::eraftpb::{Entry, EntryType};
use proto::raft_cmdpb::{AdminCmdType, CmdType, RaftCmdRequest};
use proto::raft_serverpb::{PeerState, RaftApplyState, RegionLocalState};
use protobuf::Message as _;

#[derive(Subcommand, Debug)]
pub enum OfflineCmd {
    /// Print REGION's raft, apply and region states from a stopped store's data directory
    RaftState {
        region: u64,
        /// The store's data directory
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Print REGION's raft log entries (index, term, type, size, commands) from a stopped
    /// store's data directory
    RaftLog {
        region: u64,
        /// The store's data directory
        #[arg(long)]
        data_dir: PathBuf,
        /// First index [default: the first entry kept]
        #[arg(long)]
        from: Option<u64>,
        /// At most this many entries
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
}

/// Opens the engines under `dir` (or `dir/store`) without creating anything.
fn open(dir: &Path) -> Result<Engines, String> {
    let store = if dir.join("store").join("kv").is_dir() {
        dir.join("store")
    } else {
        dir.to_path_buf()
    };
    if !store.join("kv").is_dir() {
        return Err(format!("{} holds no store's engines", dir.display()));
    }
    let kind = if store.join("raft-log").is_dir() {
        RaftLogKind::File
    } else {
        RaftLogKind::RocksDb
    };
    Engines::open_with(&store, kind).map_err(|e| {
        format!(
            "cannot open the engines in {} (is the store still running? stop it first): {e}",
            store.display()
        )
    })
}

/// Runs `raft-state` or `raft-log`; exit 1 when the store has no such region.
pub fn run(cmd: &OfflineCmd) -> Result<u8, String> {
    match cmd {
        OfflineCmd::RaftState { region, data_dir } => raft_state(&open(data_dir)?, *region),
        OfflineCmd::RaftLog {
            region,
            data_dir,
            from,
            limit,
        } => raft_log(&open(data_dir)?, *region, *from, *limit),
    }
}

fn raft_state(engines: &Engines, region: u64) -> Result<u8, String> {
    let raft = raftstore::read_raft_state(engines, region).map_err(|e| e.to_string())?;
    let apply: Option<RaftApplyState> =
        kv::engine::get_msg(&engines.kv, &keys::apply_state_key(region))
            .map_err(|e| e.to_string())?;
    let state: Option<RegionLocalState> =
        kv::engine::get_msg(&engines.kv, &keys::region_state_key(region))
            .map_err(|e| e.to_string())?;
    if raft.is_none() && apply.is_none() && state.is_none() {
        eprintln!("this store has nothing of region {region}");
        return Ok(1);
    }
    println!("region {region}");
    match raft {
        Some(r) => {
            let hs = r.hard_state.unwrap_or_default();
            println!(
                "raft state: term {} vote {} commit {} last_index {} last_term {}",
                hs.term, hs.vote, hs.commit, r.last_index, r.last_term
            );
        }
        None => println!("raft state: none"),
    }
    match apply {
        Some(a) => {
            let t = a.truncated_state.unwrap_or_default();
            println!(
                "apply state: applied {} truncated {} (term {})",
                a.applied_index, t.index, t.term
            );
        }
        None => println!("apply state: none"),
    }
    match state {
        Some(s) => {
            let r = s.region.unwrap_or_default();
            let e = r.region_epoch.unwrap_or_default();
            let peer_state = PeerState::try_from(s.state).map_or("unknown", |p| p.as_str_name());
            let peers: Vec<String> = r
                .peers
                .iter()
                .map(|p| format!("{}@{}", p.id, p.store_id))
                .collect();
            println!(
                "region state: {peer_state} [{:?}, {:?}) conf_ver {} version {} peers {}",
                String::from_utf8_lossy(&r.start_key),
                String::from_utf8_lossy(&r.end_key),
                e.conf_ver,
                e.version,
                peers.join(" ")
            );
        }
        None => println!("region state: none"),
    }
    Ok(0)
}

/// What a normal entry's command does, in a few words.
fn summary(e: &Entry) -> String {
    if e.get_entry_type() != EntryType::EntryNormal {
        return "membership change".to_string();
    }
    if e.data.is_empty() {
        return "empty (a new leader's first entry)".to_string();
    }
    let Ok(cmd) = RaftCmdRequest::decode(e.data.as_ref()) else {
        return "undecodable command".to_string();
    };
    if let Some(admin) = &cmd.admin_request {
        let kind = AdminCmdType::try_from(admin.cmd_type).map_or("unknown", |k| k.as_str_name());
        return format!("admin {kind}");
    }
    let mut counts = std::collections::BTreeMap::new();
    for r in &cmd.requests {
        let kind = CmdType::try_from(r.cmd_type).map_or("unknown", |k| k.as_str_name());
        *counts.entry(kind).or_insert(0) += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    parts.join(", ")
}

fn raft_log(engines: &Engines, region: u64, from: Option<u64>, limit: u64) -> Result<u8, String> {
    let Some(raft) = raftstore::read_raft_state(engines, region).map_err(|e| e.to_string())? else {
        eprintln!("this store has no raft state of region {region}");
        return Ok(1);
    };
    let apply: Option<RaftApplyState> =
        kv::engine::get_msg(&engines.kv, &keys::apply_state_key(region))
            .map_err(|e| e.to_string())?;
    let first = apply
        .and_then(|a| a.truncated_state)
        .map_or(1, |t| t.index + 1);
    let start = from.unwrap_or(first).max(first);
    let end = raft
        .last_index
        .min(start.saturating_add(limit).saturating_sub(1));
    println!(
        "region {region}: entries {first}..={} kept",
        raft.last_index
    );
    for index in start..=end {
        let bytes = engines
            .raft_log
            .entry(region, index)
            .map_err(|e| format!("entry {index}: {e}"))?;
        let Some(bytes) = bytes else {
            println!("{index} missing");
            continue;
        };
        match Entry::parse_from_bytes(&bytes) {
            Ok(e) => println!(
                "{index} term {} {:?} {} bytes: {}",
                e.term,
                e.get_entry_type(),
                e.data.len(),
                summary(&e)
            ),
            Err(err) => println!("{index} undecodable ({} bytes): {err}", bytes.len()),
        }
    }
    Ok(0)
}
