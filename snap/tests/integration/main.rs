//! Integration tests of the `snap` crate: one test binary, one module per area. Every test name
//! ends in `_2c`, the stage that introduces snapshots.

mod build_apply_2c;
mod common;
mod manager_2c;
mod transfer_2c;
mod verify_2c;
