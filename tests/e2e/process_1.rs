//! `tessera-server` as a real process: startup output, SIGTERM shutdown, SIGKILL durability.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use tessera_client::raw::RawClient;

/// A server process and the gRPC address it printed.
struct ServerProcess {
    child: Child,
    addr: String,
}

fn spawn_server(data_dir: &Path) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera-server"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--status-addr",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tessera-server");
    // The server prints "grpc ADDR" then "http ADDR" once both listeners are bound.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().expect("server printed its address").unwrap();
    let second = lines.next().expect("server printed its gateway").unwrap();
    assert!(second.starts_with("http "), "{second}");
    let addr = first.strip_prefix("grpc ").expect("grpc line").to_string();
    ServerProcess { child, addr }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_down_cleanly_and_keeps_data_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_server(dir.path());
    let mut c = RawClient::connect(&p.addr).await.unwrap();
    c.put("default", b"k", b"v").await.unwrap();
    signal(&p.child, "-TERM");
    let status = tokio::task::spawn_blocking(move || p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");

    let mut p = spawn_server(dir.path());
    let mut c = RawClient::connect(&p.addr).await.unwrap();
    assert_eq!(
        c.get("default", b"k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
    signal(&p.child, "-INT");
    let status = tokio::task::spawn_blocking(move || p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status after SIGINT: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_server(dir.path());
    let mut c = RawClient::connect(&p.addr).await.unwrap();
    for i in 0..200u32 {
        c.put("default", format!("k{i:04}").as_bytes(), &i.to_le_bytes())
            .await
            .unwrap();
    }
    // No shutdown, no flush: every acknowledged write must come back from the WAL.
    p.child.kill().unwrap();
    p.child.wait().unwrap();

    let mut p = spawn_server(dir.path());
    let mut c = RawClient::connect(&p.addr).await.unwrap();
    let pairs = c.scan("default", b"", 1000).await.unwrap();
    assert_eq!(pairs.len(), 200);
    for (i, (k, v)) in pairs.iter().enumerate() {
        assert_eq!(k, format!("k{i:04}").as_bytes());
        assert_eq!(v, &(i as u32).to_le_bytes());
    }
    p.child.kill().unwrap();
    p.child.wait().unwrap();
}

#[test]
fn bad_config_file_is_a_clear_startup_error_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "addr = 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-server"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("addr"), "{err}");
}
