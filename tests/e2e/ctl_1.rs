//! `tessera-ctl` as a user runs it: output and exit codes.

use std::process::Command;

use crate::util::{start, test_config};

fn ctl(addr: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera-ctl"))
        .arg("--addr")
        .arg(addr)
        .args(args)
        .output()
        .expect("run tessera-ctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_commands_and_exit_codes_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    let addr = server.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        vec![
            ctl(&addr, &["put", "hello", "world"]),
            ctl(&addr, &["get", "hello"]),
            ctl(&addr, &["put", "--cf", "lock", "l1", "x"]),
            ctl(&addr, &["scan", "--start", "a", "--limit", "5"]),
            ctl(&addr, &["delete", "hello"]),
            ctl(&addr, &["get", "hello"]),
            ctl(&addr, &["get", "--cf", "bogus", "k"]),
            ctl(&addr, &["get", "--cf", "lock", "l1"]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(out[0], (0, "OK\n".into(), String::new()));
    assert_eq!(out[1], (0, "world\n".into(), String::new()));
    assert_eq!(out[2].0, 0);
    assert_eq!(out[3], (0, "hello\tworld\n".into(), String::new()));
    assert_eq!(out[4].0, 0);
    assert_eq!(out[5].0, 1);
    assert!(out[5].2.contains("key not found"), "{:?}", out[5]);
    assert_eq!(out[6].0, 3);
    assert!(out[6].2.contains("unknown column family"), "{:?}", out[6]);
    assert_eq!(out[7], (0, "x\n".into(), String::new()));
    server.shutdown().await.unwrap();
}

#[test]
fn ctl_unreachable_server_exits_4_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, _, err) = ctl(&format!("127.0.0.1:{port}"), &["get", "k"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}
