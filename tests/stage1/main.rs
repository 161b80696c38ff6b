//! End-to-end tests of `tessera-server` (stage 1): one test binary, one module per surface.

mod ctl_1;
mod grpc_1;
mod http_1;
mod process_1;
mod util;
