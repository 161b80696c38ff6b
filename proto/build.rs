//! Compiles Tessera's `.proto` files with prost + tonic.
//!
//! protoc comes vendored (protoc-bin-vendored) so a fresh machine needs nothing installed. It is set
//! on the prost configuration of this build script only: raft-proto's own build accepts protoc 3.x
//! alone and must not see the vendored one through the environment.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "metapb.proto",
    "errorpb.proto",
    "raft_serverpb.proto",
    "raft_cmdpb.proto",
    "kvrpcpb.proto",
    "schedulerpb.proto",
    "tinykvpb.proto",
    "etcdserverpb.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from("proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| dir.join(p)).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_with_config(config, &files, &[dir])?;
    Ok(())
}
