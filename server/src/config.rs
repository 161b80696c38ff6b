//! `tessera-server` configuration: a TOML file (`tessera.toml`), every option defaulted, with
//! command-line flags taking precedence.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bytesize::ByteSize;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// Which storage engine the server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// One local RocksDB, no replication.
    Standalone,
    /// In memory, no replication, nothing written to disk: for tests and demos. Every write is
    /// lost when the server stops.
    Memory,
    /// A raft store of a cluster run by the scheduler at `scheduler_addr`.
    Raft,
}

/// The most connections each of a store's ports keeps open at once, by default.
pub use net::DEFAULT_MAX_CONNECTIONS;

/// The whole server configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address for clients.
    pub addr: String,
    /// gRPC listen address for other stores (raft messages and snapshots; raft engine only).
    /// This store also sends its raft traffic from this address's IP, when it names one.
    pub peer_addr: String,
    /// The peer address other stores are told to dial, when it differs from `peer_addr` (a store
    /// behind NAT or a port-forwarding proxy). Empty: the bound `peer_addr`.
    pub advertise_peer_addr: String,
    /// HTTP gateway listen address (status, health, `/kv/...`).
    pub status_addr: String,
    /// The most connections each port (client, peer, HTTP gateway) keeps open at once; past it
    /// new ones wait in the kernel's backlog until one closes. Each holds a file descriptor,
    /// which the engines need too.
    pub max_connections: usize,
    /// Where the engines keep their files.
    pub data_dir: PathBuf,
    /// Storage engine.
    pub engine: EngineKind,
    /// The scheduler's address (raft engine).
    pub scheduler_addr: String,
    /// Log filter, e.g. `info` or `kv=debug,info` (overridden by `RUST_LOG`).
    pub log_level: String,
    /// Log lines as `text` or `json` (one JSON object a line, for log collectors).
    pub log_format: LogFormat,
    /// Storage options.
    pub storage: StorageConfig,
    /// Limits on raw requests.
    pub raw: RawConfig,
    /// The raft store (raft engine).
    pub raftstore: RaftstoreConfig,
    /// Who may speak raft to this store.
    pub security: SecurityConfig,
}

/// Who may speak raft to this store.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// The cluster's shared secret: the peer port refuses streams that do not carry it, and this
    /// store presents it to the others. Empty: no check (only for a peer port no one else can
    /// reach).
    pub cluster_token: String,
    /// A file holding the cluster token (its first line); used when `cluster_token` is empty.
    pub cluster_token_file: Option<PathBuf>,
    /// The CA certificate (PEM) every certificate of the cluster is signed by. When set, every
    /// gRPC port speaks TLS only (the peer port mutual TLS), and this store's clients (to the
    /// scheduler and the other stores) check the servers' certificates against it.
    pub ca_path: Option<PathBuf>,
    /// This store's certificate (PEM): served on its ports and presented to the other stores.
    pub cert_path: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_path: Option<PathBuf>,
    /// The common names a store's client certificate may carry on the peer port; empty: any
    /// certificate the CA signed.
    pub cert_allowed_cn: Vec<String>,
    /// The client gRPC port asks clients for a certificate the CA signed too (mutual TLS).
    pub client_cert_auth: bool,
}

impl SecurityConfig {
    /// The TLS material, loaded: `None` without a CA.
    ///
    /// # Errors
    /// A file cannot be read or is not PEM of its kind; a certificate without its key.
    pub fn tls(&self) -> anyhow::Result<Option<security::Tls>> {
        let paths = security::TlsPaths {
            ca_path: self.ca_path.clone(),
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
            client_cert_auth: self.client_cert_auth,
        };
        paths.load().map_err(|e| anyhow::anyhow!("[security]: {e}"))
    }

    /// The cluster token, read from `cluster_token_file` if set.
    ///
    /// # Errors
    /// The token file cannot be read.
    pub fn token(&self) -> anyhow::Result<String> {
        if !self.cluster_token.is_empty() {
            return Ok(self.cluster_token.clone());
        }
        match &self.cluster_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("cannot read the cluster token file {}: {e}", path.display())
                })?;
                Ok(text.lines().next().unwrap_or_default().trim().to_string())
            }
            None => Ok(String::new()),
        }
    }
}

/// Storage options.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Fsync the write-ahead log before acknowledging each write.
    pub sync_write: bool,
    /// Free space the store keeps for itself (raft engine): at or below it, new writes are
    /// refused with `DiskFull` while reads go on, until space returns. Half of it is held in a
    /// placeholder file in the data dir. `0` turns the check off.
    pub reserve_space: ByteSize,
}

/// Limits on raw requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// Largest accepted key, in bytes.
    pub max_key_size: usize,
    /// Largest accepted value, in bytes.
    pub max_value_size: usize,
    /// The most pairs one scan response holds (a larger `limit` gets a truncated page).
    pub max_scan_limit: u32,
    /// The most bytes of keys and values one scan response holds (at least one pair); a page
    /// cut there says it was truncated.
    pub max_scan_bytes: ByteSize,
    /// The most `BatchCommands` streams open at once, over all clients; one more is refused
    /// with `ResourceExhausted`.
    pub max_batch_streams: usize,
    /// The most bytes of `BatchCommands` requests running at once, over all streams (each
    /// request counts at least 1 KiB); past it, streams wait for running requests to complete.
    pub max_batch_in_flight: ByteSize,
}

/// The raft store's knobs (raft engine); defaults are `raftstore::Config::default()`. Durations
/// are in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftstoreConfig {
    /// Wall-clock length of one raft tick.
    pub raft_base_tick_interval_ms: u64,
    /// Ticks without a leader before a follower campaigns.
    pub raft_election_timeout_ticks: usize,
    /// Ticks between leader heartbeats.
    pub raft_heartbeat_ticks: usize,
    /// Interval of the raft log GC check.
    pub raft_log_gc_tick_interval_ms: u64,
    /// Applied entries kept before the log is compacted.
    pub raft_log_gc_count_limit: u64,
    /// Interval of the split check.
    pub split_region_check_tick_interval_ms: u64,
    /// Interval of a region leader's check for raw keys whose TTL ended (they are deleted).
    pub raw_ttl_check_interval_ms: u64,
    /// Size at which a region is split, in bytes.
    pub region_max_size: u64,
    /// Size of each half after a split, in bytes.
    pub region_split_size: u64,
    /// Interval between a leader's region heartbeats to the scheduler.
    pub region_heartbeat_interval_ms: u64,
    /// Interval between store heartbeats to the scheduler.
    pub store_heartbeat_interval_ms: u64,
    /// Messages from outside a peer's mailbox holds before refusing more (`ServerIsBusy`).
    pub mailbox_capacity: usize,
    /// Write the raft log on a thread of its own while the raft worker goes on: for disks whose
    /// sync takes a millisecond or more (off: the raft worker writes it).
    pub async_log_writes: bool,
    /// Apply committed puts and deletes on a thread of their own while the raft worker goes on
    /// (off: the raft worker applies every entry).
    pub async_apply: bool,
    /// Where raft logs and states are kept: "rocksdb" (the default), "file" (the log-structured
    /// file engine) or "file-preallocated" (the same, segments zero-filled before use). A data dir
    /// keeps the engine it was created with.
    pub raft_engine: kv::RaftLogKind,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<&raftstore::Config> for RaftstoreConfig {
    fn from(c: &raftstore::Config) -> Self {
        RaftstoreConfig {
            raft_base_tick_interval_ms: millis(c.raft_base_tick_interval),
            raft_election_timeout_ticks: c.raft_election_timeout_ticks,
            raft_heartbeat_ticks: c.raft_heartbeat_ticks,
            raft_log_gc_tick_interval_ms: millis(c.raft_log_gc_tick_interval),
            raft_log_gc_count_limit: c.raft_log_gc_count_limit,
            split_region_check_tick_interval_ms: millis(c.split_region_check_tick_interval),
            raw_ttl_check_interval_ms: millis(c.raw_ttl_check_interval),
            region_max_size: c.region_max_size,
            region_split_size: c.region_split_size,
            region_heartbeat_interval_ms: millis(c.region_heartbeat_interval),
            store_heartbeat_interval_ms: millis(c.store_heartbeat_interval),
            mailbox_capacity: c.mailbox_capacity,
            async_log_writes: c.async_log_writes,
            async_apply: c.async_apply,
            raft_engine: kv::RaftLogKind::default(),
        }
    }
}

impl Default for RaftstoreConfig {
    fn default() -> Self {
        RaftstoreConfig::from(&raftstore::Config::default())
    }
}

impl RaftstoreConfig {
    /// The raftstore configuration: these knobs over `raftstore::Config::default()`.
    pub fn to_raftstore(&self) -> raftstore::Config {
        let ms = Duration::from_millis;
        raftstore::Config {
            raft_base_tick_interval: ms(self.raft_base_tick_interval_ms),
            raft_election_timeout_ticks: self.raft_election_timeout_ticks,
            raft_heartbeat_ticks: self.raft_heartbeat_ticks,
            raft_log_gc_tick_interval: ms(self.raft_log_gc_tick_interval_ms),
            raft_log_gc_count_limit: self.raft_log_gc_count_limit,
            split_region_check_tick_interval: ms(self.split_region_check_tick_interval_ms),
            raw_ttl_check_interval: ms(self.raw_ttl_check_interval_ms),
            region_max_size: self.region_max_size,
            region_split_size: self.region_split_size,
            region_heartbeat_interval: ms(self.region_heartbeat_interval_ms),
            store_heartbeat_interval: ms(self.store_heartbeat_interval_ms),
            mailbox_capacity: self.mailbox_capacity,
            async_log_writes: self.async_log_writes,
            async_apply: self.async_apply,
            ..raftstore::Config::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: "127.0.0.1:20160".to_string(),
            peer_addr: "127.0.0.1:20170".to_string(),
            advertise_peer_addr: String::new(),
            status_addr: "127.0.0.1:20180".to_string(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            data_dir: PathBuf::from("./tessera-data"),
            engine: EngineKind::Standalone,
            scheduler_addr: "127.0.0.1:2379".to_string(),
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            storage: StorageConfig::default(),
            raw: RawConfig::default(),
            raftstore: RaftstoreConfig::default(),
            security: SecurityConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            sync_write: true,
            reserve_space: ByteSize::mib(512),
        }
    }
}

impl Default for RawConfig {
    fn default() -> Self {
        let limits = kv::RawLimits::default();
        RawConfig {
            max_key_size: limits.max_key_size,
            max_value_size: limits.max_value_size,
            max_scan_limit: limits.max_scan_limit,
            max_scan_bytes: ByteSize(limits.max_scan_bytes as u64),
            max_batch_streams: crate::kv_service::BATCH_DEFAULT_MAX_STREAMS,
            max_batch_in_flight: ByteSize(
                crate::kv_service::BATCH_DEFAULT_MAX_IN_FLIGHT_BYTES as u64,
            ),
        }
    }
}

impl RawConfig {
    /// The bounds over all `BatchCommands` streams.
    pub fn batch_limits(&self) -> crate::kv_service::BatchLimits {
        let bytes = usize::try_from(self.max_batch_in_flight.0).unwrap_or(usize::MAX);
        crate::kv_service::BatchLimits::new(self.max_batch_streams, bytes)
    }

    /// The limits the raw API enforces.
    pub fn limits(&self) -> kv::RawLimits {
        kv::RawLimits {
            max_key_size: self.max_key_size,
            max_value_size: self.max_value_size,
            max_scan_limit: self.max_scan_limit,
            max_scan_bytes: usize::try_from(self.max_scan_bytes.0).unwrap_or(usize::MAX),
        }
    }
}

impl Config {
    /// The defaults, but listening on free loopback ports (port 0) with data under `dir` and a
    /// small disk reserve (8 MiB): for tests and in-process benchmarks.
    pub fn loopback(dir: &Path) -> Config {
        Config {
            addr: "127.0.0.1:0".to_string(),
            peer_addr: "127.0.0.1:0".to_string(),
            status_addr: "127.0.0.1:0".to_string(),
            data_dir: dir.to_path_buf(),
            storage: StorageConfig {
                reserve_space: ByteSize::mib(8),
                ..StorageConfig::default()
            },
            ..Config::default()
        }
    }

    /// The raftstore configuration: the `[raftstore]` knobs plus the disk reserve.
    pub fn to_raftstore(&self) -> raftstore::Config {
        raftstore::Config {
            reserve_space: self.storage.reserve_space.0,
            ..self.raftstore.to_raftstore()
        }
    }

    /// Reads a TOML configuration file; options it omits keep their defaults.
    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Config, toml::de::Error> {
        toml::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_all_defaults_1() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn shipped_example_config_parses_1() {
        let text = include_str!("../../tessera.toml");
        let cfg = Config::from_toml(text).unwrap();
        assert_eq!(
            cfg,
            Config::default(),
            "tessera.toml should document the defaults"
        );
    }

    #[test]
    fn unknown_option_is_rejected_1() {
        let e = Config::from_toml("adr = \"x\"").unwrap_err();
        assert!(e.to_string().contains("adr"), "{e}");
    }

    #[test]
    fn partial_section_keeps_other_defaults_1() {
        let cfg = Config::from_toml("[raw]\nmax_value_size = 10\n").unwrap();
        assert_eq!(cfg.raw.max_value_size, 10);
        assert_eq!(cfg.raw.max_key_size, RawConfig::default().max_key_size);
        assert!(cfg.storage.sync_write);
    }

    #[test]
    fn raftstore_defaults_are_the_raftstore_crate_defaults_2b() {
        // raftstore::Config has no PartialEq; its Debug form lists every field.
        assert_eq!(
            format!("{:?}", RaftstoreConfig::default().to_raftstore()),
            format!("{:?}", raftstore::Config::default())
        );
    }

    #[test]
    fn raft_engine_names_parse_and_others_are_refused_2b() {
        for (name, kind) in [
            ("rocksdb", kv::RaftLogKind::RocksDb),
            ("file", kv::RaftLogKind::File),
            ("file-preallocated", kv::RaftLogKind::FilePreallocated),
        ] {
            let text = format!("[raftstore]\nraft_engine = \"{name}\"\n");
            assert_eq!(
                Config::from_toml(&text).unwrap().raftstore.raft_engine,
                kind
            );
        }
        assert_eq!(
            Config::default().raftstore.raft_engine,
            kv::RaftLogKind::RocksDb
        );
        let e = Config::from_toml("[raftstore]\nraft_engine = \"leveldb\"\n").unwrap_err();
        assert!(e.to_string().contains("leveldb"), "{e}");
    }

    #[test]
    fn raftstore_section_overrides_and_validates_2b() {
        let text =
            "[raftstore]\nraft_base_tick_interval_ms = 20\nraft_election_timeout_ticks = 15\n";
        let cfg = Config::from_toml(text).unwrap().raftstore.to_raftstore();
        assert_eq!(cfg.raft_base_tick_interval, Duration::from_millis(20));
        assert_eq!(cfg.raft_election_timeout_ticks, 15);
        assert_eq!(
            cfg.raft_heartbeat_ticks,
            raftstore::Config::default().raft_heartbeat_ticks
        );
        assert!(cfg.validate().is_ok());
        let bad = Config::from_toml("[raftstore]\nraft_heartbeat_ticks = 10\n").unwrap();
        assert!(bad.raftstore.to_raftstore().validate().is_err());
        let e = Config::from_toml("[raftstore]\ntick = 1\n").unwrap_err();
        assert!(e.to_string().contains("tick"), "{e}");
    }
}
