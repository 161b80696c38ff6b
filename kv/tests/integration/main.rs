//! Integration tests of the `kv` crate: one test binary, one module per area.

mod raw_1;
mod storage_1;
