//! Shared helpers: servers on random loopback ports, a minimal HTTP/1.1 client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use server::config::{Config, EngineKind};
use server::RunningServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A config for a server on random loopback ports with data under `dir`, on the standalone
/// engine `TESSERA_TEST_ENGINE` names (`standalone`, the default, or `memory`: `make test` runs
/// the stage-1 tests on both).
pub fn test_config(dir: &Path) -> Config {
    let engine = match std::env::var("TESSERA_TEST_ENGINE").as_deref() {
        Ok("memory") => EngineKind::Memory,
        Ok("standalone") | Ok("") | Err(_) => EngineKind::Standalone,
        Ok(other) => panic!("TESSERA_TEST_ENGINE={other}: expected standalone or memory"),
    };
    Config {
        engine,
        ..Config::loopback(dir)
    }
}

/// Starts a server with `config`.
pub async fn start(config: &Config) -> RunningServer {
    server::start(config).await.expect("server starts")
}

/// A scheduler on a random port over a fresh data dir.
pub async fn start_scheduler(dir: &std::path::Path) -> scheduler::server::RunningScheduler {
    let config = scheduler::Config {
        data_dir: dir.to_path_buf(),
        ..scheduler::Config::default()
    };
    let cluster = Arc::new(scheduler::Cluster::open(&config).expect("open scheduler state"));
    scheduler::server::start(cluster, "127.0.0.1:0")
        .await
        .expect("scheduler starts")
}

/// Runs `tessera-ctl` with `args`; returns (exit code, stdout, stderr).
pub fn ctl(args: &[&str]) -> (i32, String, String) {
    ctl_env(&[], args)
}

/// Runs `tessera-ctl` with `args` and the environment variables `envs` set.
pub fn ctl_env(envs: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera-ctl"))
        .envs(envs.iter().copied())
        .args(args)
        .output()
        .expect("run tessera-ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// One HTTP/1.1 request; returns (status code, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut resp = Vec::new();
    stream.read_to_end(&mut resp).await.unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response has a header");
    let head = String::from_utf8_lossy(&resp[..split]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let body = resp[split + 4..].to_vec();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (status, if chunked { dechunk(&body) } else { body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .expect("hex chunk size");
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
}
