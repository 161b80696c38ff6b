//! Integration tests of the `kv` crate: one test binary, one module per area.

mod cas_1;
mod child;
mod corruption_1;
mod gc_4c;
mod mvcc_4a;
mod power_cut_1;
mod raw_1;
mod raw_range_1;
mod storage_1;
mod ttl_1;
mod txn_4b;
mod txn_4c;
mod txn_service_4b;
