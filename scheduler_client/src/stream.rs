//! The region heartbeat stream: a task that keeps one bidirectional stream to the scheduler
//! open, reopening it (with backoff) whenever it breaks, and a thread that hands the responses
//! to the registered handler.
//!
//! The handler runs on its own std thread rather than in the runtime, so it may block or call
//! back into the client without stalling or re-entering the runtime.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use proto::schedulerpb::scheduler_client::SchedulerClient as GrpcClient;
use proto::schedulerpb::{RegionHeartbeatRequest, RegionHeartbeatResponse, RequestHeader};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::HeartbeatHandler;

/// The handler slot shared by the client and the dispatch thread.
pub(crate) type HandlerSlot = Arc<RwLock<Option<Arc<HeartbeatHandler>>>>;

/// Requests queued for the stream; beyond this a heartbeat is refused (the next one will do).
pub(crate) const HEARTBEAT_QUEUE: usize = 1024;

/// Settings of the pump.
#[derive(Clone)]
pub(crate) struct PumpConfig {
    pub(crate) cluster_id: u64,
    pub(crate) open_timeout: Duration,
    pub(crate) initial_backoff: Duration,
    pub(crate) max_backoff: Duration,
}

/// Keeps the stream open and moves requests out and responses in until the client is dropped.
pub(crate) async fn heartbeat_pump(
    client: GrpcClient<Channel>,
    cfg: PumpConfig,
    mut requests: mpsc::Receiver<RegionHeartbeatRequest>,
    responses: crossbeam_channel::Sender<RegionHeartbeatResponse>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = cfg.initial_backoff;
    loop {
        if *stop.borrow() {
            return;
        }
        let (tx, rx) = mpsc::channel::<RegionHeartbeatRequest>(64);
        let opened = tokio::time::timeout(
            cfg.open_timeout,
            client.clone().region_heartbeat(ReceiverStream::new(rx)),
        )
        .await;
        let mut inbound = match opened {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) => {
                tracing::debug!(%status, "cannot open the region heartbeat stream");
                if !wait_backoff(&mut requests, &mut stop, &mut backoff, &cfg).await {
                    return;
                }
                continue;
            }
            Err(_) => {
                tracing::debug!("opening the region heartbeat stream timed out");
                if !wait_backoff(&mut requests, &mut stop, &mut backoff, &cfg).await {
                    return;
                }
                continue;
            }
        };
        tracing::debug!("region heartbeat stream open");
        backoff = cfg.initial_backoff;
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => return,
                req = requests.recv() => {
                    let Some(mut req) = req else { return };
                    req.header.get_or_insert(RequestHeader { cluster_id: cfg.cluster_id });
                    if tx.send(req).await.is_err() {
                        break;
                    }
                }
                resp = inbound.message() => match resp {
                    Ok(Some(resp)) => {
                        if responses.send(resp).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "region heartbeat stream broke");
                        break;
                    }
                },
            }
        }
        tracing::info!("region heartbeat stream closed, reopening");
    }
}

/// Waits until the client asks the pump to stop (or is gone, which means the same). The
/// borrow guard of `wait_for` is dropped here: it must not be held across an await.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps for the backoff while dropping the heartbeats queued meanwhile: they describe the past
/// and the stores send fresh ones periodically. Returns false when the pump should end.
async fn wait_backoff(
    requests: &mut mpsc::Receiver<RegionHeartbeatRequest>,
    stop: &mut watch::Receiver<bool>,
    backoff: &mut Duration,
    cfg: &PumpConfig,
) -> bool {
    let sleep = tokio::time::sleep(*backoff);
    tokio::pin!(sleep);
    *backoff = (*backoff * 2).min(cfg.max_backoff);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            _ = stopped(stop) => return false,
            req = requests.recv() => if req.is_none() { return false },
        }
    }
}

/// Hands responses to the current handler until the pump is gone.
pub(crate) fn dispatch_responses(
    responses: crossbeam_channel::Receiver<RegionHeartbeatResponse>,
    slot: HandlerSlot,
) {
    for resp in responses {
        // Cloned out so the handler runs without the slot locked, and may replace itself.
        let handler = slot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        match handler {
            Some(handler) => handler(resp),
            None => tracing::debug!(
                region_id = resp.region_id,
                "region heartbeat response before any handler, dropped"
            ),
        }
    }
}
