//! The `scheduler_client` crate's error type.

use std::time::Duration;

use proto::schedulerpb::{self, ErrorType};

/// Errors of scheduler requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The scheduler could not be reached (not started, restarting, network down); retrying
    /// later may succeed.
    #[error("scheduler at {addr} unavailable: {reason}")]
    Unavailable {
        /// The scheduler's address.
        addr: String,
        /// The last transport error.
        reason: String,
    },
    /// The request did not complete in time.
    #[error("scheduler request {op} timed out after {after:?}")]
    Timeout {
        /// The request.
        op: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// The cluster is not bootstrapped yet.
    #[error("cluster is not bootstrapped")]
    NotBootstrapped,
    /// The cluster is already bootstrapped (by this store earlier, or by another one).
    #[error("cluster is already bootstrapped")]
    AlreadyBootstrapped,
    /// The store was removed from the cluster for good.
    #[error("store is a tombstone: {0}")]
    StoreTombstone(String),
    /// No region or store matches.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request's region epoch is older than the scheduler's.
    #[error("stale region: {0}")]
    StaleRegion(String),
    /// The scheduler rejected the request as malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Any other failure the scheduler reported, or an unexpected gRPC status.
    #[error("scheduler error: {0}")]
    Rpc(String),
}

/// Result of the `scheduler_client` crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error a response header reports, if any.
    pub fn from_header(header: Option<&schedulerpb::ResponseHeader>) -> Option<Error> {
        let err = header?.error.as_ref()?;
        let msg = err.message.clone();
        let kind = ErrorType::try_from(err.r#type).unwrap_or(ErrorType::Unknown);
        Some(match kind {
            ErrorType::Ok => return None,
            ErrorType::NotBootstrapped => Error::NotBootstrapped,
            ErrorType::AlreadyBootstrapped => Error::AlreadyBootstrapped,
            ErrorType::StoreTombstone => Error::StoreTombstone(msg),
            ErrorType::RegionNotFound => Error::NotFound(msg),
            ErrorType::StaleRegion => Error::StaleRegion(msg),
            ErrorType::InvalidArgument => Error::InvalidArgument(msg),
            ErrorType::Unknown | ErrorType::IncompatibleVersion => Error::Rpc(msg),
        })
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::Timeout { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::schedulerpb::ResponseHeader;

    fn header(kind: ErrorType) -> ResponseHeader {
        ResponseHeader {
            cluster_id: 7,
            error: Some(schedulerpb::Error {
                r#type: kind as i32,
                message: "why".into(),
            }),
        }
    }

    #[test]
    fn header_errors_map_to_variants_3c() {
        assert_eq!(Error::from_header(None), None);
        assert_eq!(Error::from_header(Some(&ResponseHeader::default())), None);
        let cases = [
            (ErrorType::NotBootstrapped, Error::NotBootstrapped),
            (ErrorType::AlreadyBootstrapped, Error::AlreadyBootstrapped),
            (ErrorType::RegionNotFound, Error::NotFound("why".into())),
            (ErrorType::StaleRegion, Error::StaleRegion("why".into())),
            (ErrorType::Unknown, Error::Rpc("why".into())),
        ];
        for (kind, want) in cases {
            assert_eq!(Error::from_header(Some(&header(kind))), Some(want));
        }
        assert!(!Error::NotBootstrapped.is_retryable());
        assert!(Error::Timeout {
            op: "tso",
            after: Duration::from_secs(1)
        }
        .is_retryable());
    }
}
