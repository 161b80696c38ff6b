//! The test cluster as a client: requests routed by key to the region's leader, following
//! `NotLeader` hints and retrying other stores on timeouts and region errors until a deadline;
//! the `try_*` and `must_*` helpers over it. A compare-and-swap is retried only after failures
//! that prove it was not applied, as a real client must (see [`CasError`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kv::{CasOutcome, Cf, EngineReader, StorageReader as _};
use proto::metapb;
use proto::raft_cmdpb::{
    CasRequest, CmdType, DeleteRequest, GetRequest, PutRequest, RaftCmdRequest, RaftRequestHeader,
    Request, SnapRequest,
};
use raftstore::CmdResponse;

use crate::cluster::Cluster;

/// How long `must_*` helpers keep retrying.
const MUST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which peer leads each region, as one client believes. Clients with their own caches go
/// stale independently, as real clients do: one may still talk to a deposed leader while
/// another already found the new one.
#[derive(Default)]
pub struct LeaderCache(Mutex<HashMap<u64, metapb::Peer>>);

impl LeaderCache {
    fn get(&self, region_id: u64) -> Option<metapb::Peer> {
        self.lock().get(&region_id).cloned()
    }

    fn set(&self, region_id: u64, peer: metapb::Peer) {
        self.lock().insert(region_id, peer);
    }

    fn forget(&self, region_id: u64) {
        self.lock().remove(&region_id);
    }

    /// Forgets leaders on store `store_id` (it stopped).
    pub(crate) fn retain_stores_other_than(&self, store_id: u64) {
        self.lock().retain(|_, p| p.store_id != store_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, metapb::Peer>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a client request ended without an answer.
#[derive(Debug, Clone)]
pub struct RequestError(pub String);

/// How a compare-and-swap through the test cluster ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasError {
    /// No attempt applied: each failed in a way that proves it, until the deadline.
    NotApplied(String),
    /// An attempt may have applied (it timed out, or its peer could no longer tell); it was
    /// not sent again.
    Undetermined(String),
}

/// How [`Cluster::route`] ended without an answer.
enum Ended {
    Deadline(String),
    Undetermined(String),
}

impl Cluster {
    /// Sends `requests` for `key`'s region to its leader, following `NotLeader` hints and
    /// trying other stores on timeouts and other region errors, until `timeout` passes.
    ///
    /// # Errors
    /// The last failure seen when time runs out: the outcome of a write is then unknown.
    pub fn request(
        &self,
        key: &[u8],
        requests: Vec<Request>,
        timeout: Duration,
    ) -> Result<CmdResponse, RequestError> {
        self.request_with(&self.leaders, key, requests, timeout)
    }

    /// As [`Cluster::request`], with the caller's own leader cache.
    ///
    /// # Errors
    /// As [`Cluster::request`].
    pub fn request_with(
        &self,
        leaders: &LeaderCache,
        key: &[u8],
        requests: Vec<Request>,
        timeout: Duration,
    ) -> Result<CmdResponse, RequestError> {
        match self.route(leaders, key, requests, timeout, false) {
            Ok(resp) => Ok(resp),
            Err(Ended::Deadline(e) | Ended::Undetermined(e)) => Err(RequestError(e)),
        }
    }

    /// Sends `requests` as [`Cluster::request_with`] does; with `once`, only until an attempt
    /// fails in a way that does not prove it was not applied.
    fn route(
        &self,
        leaders: &LeaderCache,
        key: &[u8],
        requests: Vec<Request>,
        timeout: Duration,
        once: bool,
    ) -> Result<CmdResponse, Ended> {
        let deadline = Instant::now() + timeout;
        let mut attempt = 0usize;
        let mut last_err = String::from("no attempt made");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Ended::Deadline(format!(
                    "no answer for key {:?} in {timeout:?} after {attempt} attempts; last: {last_err}",
                    String::from_utf8_lossy(key)
                )));
            }
            let region = self.get_region(key);
            let cached = leaders.get(region.id);
            let running = self.read_sim().running_stores();
            let target = match cached {
                Some(p) if running.contains(&p.store_id) => p,
                _ => {
                    let store = running
                        .get(attempt % running.len().max(1))
                        .copied()
                        .unwrap_or(0);
                    Self::peer_on(&region, store).unwrap_or_default()
                }
            };
            attempt += 1;
            let req = RaftCmdRequest {
                header: Some(RaftRequestHeader {
                    region_id: region.id,
                    peer: Some(target),
                    region_epoch: region.region_epoch,
                    term: 0,
                }),
                requests: requests.clone(),
                admin_request: None,
            };
            let per_try = self.cfg.command_timeout.min(deadline - now);
            let res = self
                .read_sim()
                .call_command_on_node(target.store_id, req, per_try);
            let forget = || leaders.forget(region.id);
            match res {
                Ok(resp) => match resp.response.header.as_ref().and_then(|h| h.error.clone()) {
                    None => {
                        leaders.set(region.id, target);
                        return Ok(resp);
                    }
                    Some(e) if once && !e.proves_not_applied() => {
                        return Err(Ended::Undetermined(e.message));
                    }
                    Some(e) => {
                        last_err = e.message.clone();
                        match e.not_leader.and_then(|nl| nl.leader) {
                            Some(l) if l.id != target.id => leaders.set(region.id, l),
                            _ => {
                                forget();
                                // No leader known anywhere yet (an election is running): back
                                // off briefly instead of spinning on the stores.
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                    }
                },
                // Only a store that is not running proves the command never arrived.
                Err(e) if once && !matches!(e, raftstore::Error::Transport(_)) => {
                    forget();
                    return Err(Ended::Undetermined(e.to_string()));
                }
                Err(e) => {
                    last_err = e.to_string();
                    forget();
                    if matches!(e, raftstore::Error::Transport(_)) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
            }
        }
    }

    /// Puts `value` at `key` (default CF) with a deadline.
    ///
    /// # Errors
    /// As [`Cluster::request`].
    pub fn try_put(&self, key: &[u8], value: &[u8], timeout: Duration) -> Result<(), RequestError> {
        self.try_put_with(&self.leaders, key, value, timeout)
    }

    /// As [`Cluster::try_put`], with the caller's own leader cache.
    ///
    /// # Errors
    /// As [`Cluster::request`].
    pub fn try_put_with(
        &self,
        leaders: &LeaderCache,
        key: &[u8],
        value: &[u8],
        timeout: Duration,
    ) -> Result<(), RequestError> {
        self.request_with(leaders, key, vec![put_req(key, value)], timeout)
            .map(|_| ())
    }

    /// Reads `key` (default CF) with a deadline; `None` when absent.
    ///
    /// # Errors
    /// As [`Cluster::request`].
    pub fn try_get(&self, key: &[u8], timeout: Duration) -> Result<Option<Vec<u8>>, RequestError> {
        self.try_get_with(&self.leaders, key, timeout)
    }

    /// As [`Cluster::try_get`], with the caller's own leader cache.
    ///
    /// # Errors
    /// As [`Cluster::request`].
    pub fn try_get_with(
        &self,
        leaders: &LeaderCache,
        key: &[u8],
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        let resp = self.request_with(leaders, key, vec![get_req(key)], timeout)?;
        let value = resp
            .response
            .responses
            .first()
            .and_then(|r| r.get.as_ref())
            .map(|g| g.value.clone())
            .unwrap_or_default();
        Ok((!value.is_empty()).then_some(value))
    }

    /// Writes `value` at `key` (default CF) if the key holds `expect` (`None`: is absent),
    /// with a deadline, sending it again only after failures that prove it was not applied.
    ///
    /// # Errors
    /// [`CasError::Undetermined`] when an attempt may have applied, [`CasError::NotApplied`]
    /// when the deadline passed otherwise.
    pub fn try_cas_with(
        &self,
        leaders: &LeaderCache,
        key: &[u8],
        expect: Option<&[u8]>,
        value: &[u8],
        timeout: Duration,
    ) -> Result<CasOutcome, CasError> {
        let req = cas_req(key, expect, value);
        let resp = match self.route(leaders, key, vec![req], timeout, true) {
            Ok(resp) => resp,
            Err(Ended::Deadline(e)) => return Err(CasError::NotApplied(e)),
            Err(Ended::Undetermined(e)) => return Err(CasError::Undetermined(e)),
        };
        let cas = resp
            .response
            .responses
            .first()
            .and_then(|r| r.cas.clone())
            .expect("a compare-and-swap response carries its outcome");
        Ok(CasOutcome {
            succeed: cas.succeed,
            previous: (!cas.previous_not_exist).then_some(cas.previous_value),
        })
    }

    /// Compare-and-swap, panicking when its outcome is not known in time.
    pub fn must_cas(&self, key: &[u8], expect: Option<&[u8]>, value: &[u8]) -> CasOutcome {
        self.try_cas_with(&self.leaders, key, expect, value, MUST_TIMEOUT)
            .unwrap_or_else(|e| panic!("must_cas {:?}: {e:?}", String::from_utf8_lossy(key)))
    }

    /// Puts, panicking when it cannot be done in time.
    pub fn must_put(&self, key: &[u8], value: &[u8]) {
        self.try_put(key, value, MUST_TIMEOUT)
            .unwrap_or_else(|e| panic!("must_put {:?}: {}", String::from_utf8_lossy(key), e.0));
    }

    /// Reads, panicking when it cannot be done in time.
    pub fn must_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.try_get(key, MUST_TIMEOUT)
            .unwrap_or_else(|e| panic!("must_get {:?}: {}", String::from_utf8_lossy(key), e.0))
    }

    /// Deletes, panicking when it cannot be done in time.
    pub fn must_delete(&self, key: &[u8]) {
        let req = Request {
            cmd_type: CmdType::Delete as i32,
            delete: Some(DeleteRequest {
                cf: String::new(),
                key: key.to_vec(),
            }),
            ..Default::default()
        };
        self.request(key, vec![req], MUST_TIMEOUT)
            .unwrap_or_else(|e| panic!("must_delete {:?}: {}", String::from_utf8_lossy(key), e.0));
    }

    /// All pairs with keys in `[start, end)` (empty `end`: to the end of `start`'s region),
    /// read from one consistent snapshot of the leader.
    pub fn must_scan(&self, start: &[u8], end: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let req = Request {
            cmd_type: CmdType::Snap as i32,
            snap: Some(SnapRequest {}),
            ..Default::default()
        };
        let resp = self
            .request(start, vec![req], MUST_TIMEOUT)
            .unwrap_or_else(|e| panic!("must_scan: {}", e.0));
        let region = resp.response.responses[0]
            .snap
            .as_ref()
            .and_then(|s| s.region.clone())
            .expect("snap response carries the region");
        let snap = resp.snapshot.expect("snap response carries a snapshot");
        let reader = EngineReader::new(snap, &region.start_key, &region.end_key);
        let mut it = reader.iter_cf(Cf::Default).expect("iterating a snapshot");
        it.seek(start);
        let mut out = Vec::new();
        while it.valid().expect("iterating a snapshot") {
            if !end.is_empty() && it.key() >= end {
                break;
            }
            out.push((it.key().to_vec(), it.value().to_vec()));
            it.next();
        }
        out
    }
}

/// A `Put` of `value` at `key` in the default CF.
pub fn put_req(key: &[u8], value: &[u8]) -> Request {
    Request {
        cmd_type: CmdType::Put as i32,
        put: Some(PutRequest {
            cf: String::new(),
            key: key.to_vec(),
            value: value.to_vec(),
        }),
        ..Default::default()
    }
}

/// A `Cas` of `key` in the default CF: `value` if it holds `expect` (`None`: is absent).
pub fn cas_req(key: &[u8], expect: Option<&[u8]>, value: &[u8]) -> Request {
    Request {
        cmd_type: CmdType::Cas as i32,
        cas: Some(CasRequest {
            cf: String::new(),
            key: key.to_vec(),
            value: value.to_vec(),
            previous_not_exist: expect.is_none(),
            previous_value: expect.map(<[u8]>::to_vec).unwrap_or_default(),
            now_ms: codec::raw_value::now_ms(),
        }),
        ..Default::default()
    }
}

/// A `Get` of `key` in the default CF.
pub fn get_req(key: &[u8]) -> Request {
    Request {
        cmd_type: CmdType::Get as i32,
        get: Some(GetRequest {
            cf: String::new(),
            key: key.to_vec(),
        }),
        ..Default::default()
    }
}
