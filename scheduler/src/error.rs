//! The `scheduler` crate's error type, and its mapping onto the `schedulerpb` response header.

use proto::schedulerpb::{self, ErrorType};

/// Errors of the scheduler core and its server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request needs a bootstrapped cluster and this one is not.
    #[error("cluster is not bootstrapped")]
    NotBootstrapped,
    /// `Bootstrap` was called on a cluster that already is.
    #[error("cluster is already bootstrapped")]
    AlreadyBootstrapped,
    /// The request names another cluster.
    #[error("cluster id mismatch: this scheduler serves {expected}, request is for {got}")]
    ClusterIdMismatch {
        /// This scheduler's cluster id.
        expected: u64,
        /// The id in the request header.
        got: u64,
    },
    /// No store with this id was ever put.
    #[error("store {0} not found")]
    StoreNotFound(u64),
    /// The store has been removed from the cluster for good.
    #[error("store {0} is a tombstone")]
    StoreTombstone(u64),
    /// No region matches the key or id.
    #[error("region not found: {0}")]
    RegionNotFound(String),
    /// A heartbeat or split request carries an epoch older than what the scheduler knows.
    #[error("stale region {region_id}: {reason}")]
    StaleRegion {
        /// The region in the request.
        region_id: u64,
        /// What is older than what.
        reason: String,
    },
    /// The request is malformed (missing region, zero id, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The persistent store failed; the state in memory was not changed.
    #[error("storage: {0}")]
    Storage(#[from] kv::Error),
    /// A configuration file could not be read or parsed.
    #[error("config: {0}")]
    Config(String),
    /// The gRPC server could not start or failed while serving.
    #[error("server: {0}")]
    Server(String),
}

/// Result of the `scheduler` crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The protocol error type that tells a client what kind of failure this is.
    pub fn error_type(&self) -> ErrorType {
        match self {
            Error::NotBootstrapped => ErrorType::NotBootstrapped,
            Error::AlreadyBootstrapped => ErrorType::AlreadyBootstrapped,
            Error::StoreTombstone(_) => ErrorType::StoreTombstone,
            Error::RegionNotFound(_) => ErrorType::RegionNotFound,
            Error::StaleRegion { .. } => ErrorType::StaleRegion,
            Error::InvalidArgument(_) | Error::ClusterIdMismatch { .. } => {
                ErrorType::InvalidArgument
            }
            Error::StoreNotFound(_) | Error::Storage(_) | Error::Config(_) | Error::Server(_) => {
                ErrorType::Unknown
            }
        }
    }

    /// The error as it travels in a response header.
    pub fn to_proto(&self) -> schedulerpb::Error {
        schedulerpb::Error {
            r#type: self.error_type() as i32,
            message: self.to_string(),
        }
    }
}
