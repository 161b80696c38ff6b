//! `tessera-scheduler` as a real process: it prints its address, serves a client, stops on
//! SIGTERM, and after a restart on the same data dir never hands out an id or a timestamp again.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};

fn spawn_scheduler(data_dir: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tessera-scheduler"))
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
        .expect("spawn tessera-scheduler");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .next()
        .expect("scheduler printed its address")
        .unwrap();
    let addr = line
        .strip_prefix("scheduler ")
        .expect("scheduler line")
        .to_string();
    (child, addr)
}

fn ids_and_timestamps(addr: &str) -> (Vec<u64>, Vec<u64>) {
    let c = RpcClient::connect(addr, RpcClientConfig::default()).expect("connect");
    let ids = (0..5).map(|_| c.alloc_id().unwrap()).collect();
    let ts = (0..5).map(|_| c.tso().unwrap()).collect();
    (ids, ts)
}

fn terminate(child: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "scheduler exit status after SIGTERM: {exit}"
    );
}

#[test]
fn scheduler_binary_restarts_without_going_back_3c() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_scheduler(dir.path());
    let (ids1, ts1) = ids_and_timestamps(&addr);
    terminate(&mut child);

    let (mut child, addr) = spawn_scheduler(dir.path());
    let (ids2, ts2) = ids_and_timestamps(&addr);
    terminate(&mut child);

    for w in ids1.iter().chain(&ids2).collect::<Vec<_>>().windows(2) {
        assert!(
            w[0] < w[1],
            "ids must keep increasing across a restart: {ids1:?} then {ids2:?}"
        );
    }
    for w in ts1.iter().chain(&ts2).collect::<Vec<_>>().windows(2) {
        assert!(
            w[0] < w[1],
            "timestamps must keep increasing: {ts1:?} then {ts2:?}"
        );
    }
}
