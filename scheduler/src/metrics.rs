//! [`SchedulerMetrics`]: the scheduler's metrics, in a Prometheus registry of its own, served at
//! `GET /metrics` on its status port (see `http`). Names follow the stores' (`tessera_scheduler_`
//! first; `_total`, `_seconds`); every labelled series exists from the start.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};
use prometheus::{Registry, TextEncoder};

use crate::operator::OpKind;

/// What happened to an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpEvent {
    Created,
    Finished,
    TimedOut,
    Cancelled,
}

impl OpEvent {
    const ALL: [OpEvent; 4] = [
        OpEvent::Created,
        OpEvent::Finished,
        OpEvent::TimedOut,
        OpEvent::Cancelled,
    ];

    fn as_str(self) -> &'static str {
        match self {
            OpEvent::Created => "created",
            OpEvent::Finished => "finished",
            OpEvent::TimedOut => "timed_out",
            OpEvent::Cancelled => "cancelled",
        }
    }
}

fn kind_str(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Leader => "leader",
        OpKind::Region => "region",
        OpKind::Replica => "replica",
        OpKind::Admin => "admin",
    }
}

/// The store states the stores gauge is labelled by.
pub(crate) const STORE_STATES: [&str; 4] = ["up", "down", "offline", "tombstone"];

/// The scheduler's metrics. Clones share the same series.
#[derive(Clone)]
pub struct SchedulerMetrics {
    registry: Registry,
    operators: IntCounterVec,
    heartbeat_duration: Histogram,
    tso_requests: IntCounter,
    tso_timestamps: IntCounter,
    regions: IntGauge,
    stores: IntGaugeVec,
}

impl std::fmt::Debug for SchedulerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerMetrics").finish_non_exhaustive()
    }
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        match SchedulerMetrics::build() {
            Ok(m) => m,
            // Fixed, valid names in a fresh registry: cannot fail.
            Err(e) => panic!("registering the scheduler's metrics: {e}"),
        }
    }
}

fn add<M: Collector + Clone + 'static>(r: &Registry, m: M) -> prometheus::Result<M> {
    r.register(Box::new(m.clone()))?;
    Ok(m)
}

impl SchedulerMetrics {
    fn build() -> prometheus::Result<SchedulerMetrics> {
        let r = Registry::new();
        let operators = add(
            &r,
            IntCounterVec::new(
                Opts::new(
                    "tessera_scheduler_operators_total",
                    "Operators by the scheduler that made them and what became of them",
                ),
                &["kind", "event"],
            )?,
        )?;
        for kind in [
            OpKind::Leader,
            OpKind::Region,
            OpKind::Replica,
            OpKind::Admin,
        ] {
            for event in OpEvent::ALL {
                operators.with_label_values(&[kind_str(kind), event.as_str()]);
            }
        }
        let buckets = (0..18).map(|i| 0.000_05 * f64::from(1u32 << i)).collect();
        let stores = add(
            &r,
            IntGaugeVec::new(
                Opts::new("tessera_scheduler_stores", "Stores known, by state"),
                &["state"],
            )?,
        )?;
        for s in STORE_STATES {
            stores.with_label_values(&[s]);
        }
        Ok(SchedulerMetrics {
            operators,
            heartbeat_duration: add(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tessera_scheduler_region_heartbeat_duration_seconds",
                        "Time to handle one region heartbeat",
                    )
                    .buckets(buckets),
                )?,
            )?,
            tso_requests: add(
                &r,
                IntCounter::new(
                    "tessera_scheduler_tso_requests_total",
                    "Timestamp requests served",
                )?,
            )?,
            tso_timestamps: add(
                &r,
                IntCounter::new(
                    "tessera_scheduler_tso_timestamps_total",
                    "Timestamps handed out",
                )?,
            )?,
            regions: add(
                &r,
                IntGauge::new(
                    "tessera_scheduler_regions",
                    "Regions the scheduler knows of",
                )?,
            )?,
            stores,
            registry: r,
        })
    }

    pub(crate) fn on_operator(&self, kind: OpKind, event: OpEvent) {
        self.operators
            .with_label_values(&[kind_str(kind), event.as_str()])
            .inc();
    }

    pub(crate) fn on_region_heartbeat(&self, took: Duration) {
        self.heartbeat_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn on_tso(&self, count: u32) {
        self.tso_requests.inc();
        self.tso_timestamps.inc_by(u64::from(count));
    }

    pub(crate) fn set_counts(&self, regions: usize, stores: [usize; 4]) {
        self.regions.set(regions as i64);
        for (s, n) in STORE_STATES.iter().zip(stores) {
            self.stores.with_label_values(&[s]).set(n as i64);
        }
    }

    /// Every metric, in Prometheus' text format.
    ///
    /// # Errors
    /// When the encoder fails (it does not on these metrics).
    pub fn encode(&self) -> prometheus::Result<String> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}
