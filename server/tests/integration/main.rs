//! Integration tests of the `server` crate: one test binary, one module per area.

mod batch_1;
mod service;
