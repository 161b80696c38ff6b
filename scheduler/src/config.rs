//! Scheduler configuration: where to listen and store data, and the knobs of scheduling.
//!
//! Every field has a default, so an empty TOML file (or none) is a valid configuration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// Configuration of a scheduler; `Config::default()` is what the binary runs with when given no
/// file and no flags.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address.
    pub addr: String,
    /// HTTP status port: `/metrics`, `/status`, `/stores`, `/regions`, `/health`.
    pub status_addr: String,
    /// Log filter (`info`, `debug`, `scheduler=debug,info`, ...); `RUST_LOG` wins when set.
    pub log_level: String,
    /// Log lines as `text` or `json` (one JSON object a line).
    pub log_format: String,
    /// Directory of the persistent state.
    pub data_dir: PathBuf,
    /// Replicas per region a freshly bootstrapped cluster asks for; afterwards the persisted
    /// cluster config (`PutClusterConfig`) rules.
    pub max_replicas: u32,
    /// How often the balance schedulers run, in milliseconds.
    pub schedule_interval_ms: u64,
    /// At most this many operators in flight touch one store.
    pub store_limit: usize,
    /// An operator not finished after this long is dropped, in milliseconds.
    pub operator_timeout_ms: u64,
    /// A store silent for this long is down: no new replica goes there and its peers are
    /// replaced, in milliseconds.
    pub max_store_down_time_ms: u64,
    /// Add new replicas as learners first and promote them once they caught up, instead of adding
    /// voters directly.
    pub use_learner: bool,
    /// Run the balance-leader scheduler.
    pub balance_leader: bool,
    /// Run the balance-region scheduler.
    pub balance_region: bool,
    /// The most connections the gRPC port keeps open at once; past it, new connections wait in
    /// the kernel's backlog until one closes.
    pub max_connections: usize,
    /// The automatic MVCC GC safe point: this many seconds of history are kept, and the
    /// scheduler raises the safe point to now minus that (never past the oldest lock a store
    /// reports); 0 turns it off (the safe point then moves only by `tessera-ctl gc`).
    pub gc_life_time_secs: u64,
    /// TLS: with a CA (`ca_path`), the gRPC port speaks TLS only, with this scheduler's
    /// certificate (`cert_path`, `key_path`).
    pub security: security::TlsPaths,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            addr: "127.0.0.1:2379".to_string(),
            status_addr: "127.0.0.1:2381".to_string(),
            log_level: "info".to_string(),
            log_format: "text".to_string(),
            data_dir: PathBuf::from("./tessera-scheduler-data"),
            max_replicas: 3,
            schedule_interval_ms: 100,
            store_limit: 4,
            operator_timeout_ms: 60_000,
            max_store_down_time_ms: 30_000,
            use_learner: false,
            balance_leader: true,
            balance_region: true,
            max_connections: net::DEFAULT_MAX_CONNECTIONS,
            gc_life_time_secs: 0,
            security: security::TlsPaths::default(),
        }
    }
}

impl Config {
    /// Reads a TOML file; missing fields keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Config::from_toml(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parses TOML text; missing fields keep their defaults.
    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that would make the scheduler misbehave.
    pub fn validate(&self) -> Result<()> {
        if self.max_replicas == 0 {
            return Err(Error::Config("max_replicas must be at least 1".into()));
        }
        if self.store_limit == 0 {
            return Err(Error::Config("store_limit must be at least 1".into()));
        }
        if self.schedule_interval_ms == 0 {
            return Err(Error::Config(
                "schedule_interval_ms must be positive".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(Error::Config("max_connections must be at least 1".into()));
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(Error::Config(format!(
                "log_format must be \"text\" or \"json\", not {:?}",
                self.log_format
            )));
        }
        Ok(())
    }

    /// The schedule settings a new cluster starts with (an administrator may change them at
    /// run time; see `Cluster::set_schedule_config`).
    pub fn initial_schedule(&self) -> proto::schedulerpb::ScheduleConfig {
        proto::schedulerpb::ScheduleConfig {
            balance_leader: self.balance_leader,
            balance_region: self.balance_region,
            store_limit: self.store_limit as u64,
        }
    }

    /// `schedule_interval_ms` as a duration.
    pub fn schedule_interval(&self) -> Duration {
        Duration::from_millis(self.schedule_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_overrides_3c() {
        let config = Config::from_toml("max_replicas = 5\nuse_learner = true\n").unwrap();
        assert_eq!(config.max_replicas, 5);
        assert!(config.use_learner);
        assert_eq!(config.addr, Config::default().addr);
        assert!(Config::from_toml("max_replicas = 0").is_err());
        assert!(Config::from_toml("no_such_knob = 1").is_err());
    }
}
