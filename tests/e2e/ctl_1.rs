//! `tessera-ctl` as a user runs it: output and exit codes.

use crate::util::{ctl, ctl_env, start, test_config};

fn ctl_at(addr: &str, args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["--addr", addr];
    all.extend_from_slice(args);
    ctl(&all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_commands_and_exit_codes_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    let addr = server.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        vec![
            ctl_at(&addr, &["put", "hello", "world"]),
            ctl_at(&addr, &["get", "hello"]),
            ctl_at(&addr, &["put", "--cf", "lock", "l1", "x"]),
            ctl_at(&addr, &["scan", "--start", "a", "--limit", "5"]),
            ctl_at(&addr, &["delete", "hello"]),
            ctl_at(&addr, &["get", "hello"]),
            ctl_at(&addr, &["get", "--cf", "bogus", "k"]),
            ctl_at(&addr, &["get", "--cf", "lock", "l1"]),
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
    let (code, _, err) = ctl_at(&format!("127.0.0.1:{port}"), &["get", "k"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

/// The batch commands, scans of a range (`--end`, `--reverse`, `--keys-only`) and `--hex` keys
/// and values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_batches_ranges_and_hex_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    let addr = server.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        vec![
            ctl_at(
                &addr,
                &["batch-put", "a", "1", "b", "2", "c", "3", "d", "4"],
            ),
            ctl_at(&addr, &["batch-get", "d", "zz", "a"]),
            ctl_at(&addr, &["scan", "--start", "b", "--end", "d"]),
            ctl_at(&addr, &["scan", "--reverse", "--limit", "3"]),
            ctl_at(&addr, &["scan", "--end", "c", "--keys-only"]),
            ctl_at(&addr, &["batch-delete", "a", "c"]),
            ctl_at(&addr, &["scan"]),
            // Binary keys and values, written and read back in hex.
            ctl_at(&addr, &["--hex", "put", "00ff", "cafe"]),
            ctl_at(&addr, &["--hex", "get", "00ff"]),
            ctl_at(&addr, &["--hex", "scan", "--end", "0100"]),
            ctl_at(&addr, &["--hex", "get", "0g"]),
            ctl_at(&addr, &["batch-put", "odd"]),
            ctl_at(&addr, &["batch-put", "m", "1", "n", "2", "o", "3"]),
            ctl_at(&addr, &["delete-range", "--start", "m", "--end", "o"]),
            ctl_at(&addr, &["scan", "--start", "m", "--keys-only"]),
            ctl_at(&addr, &["delete-range", "--start", "m"]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(out[0], (0, "OK\n".into(), String::new()));
    assert_eq!(out[1], (0, "a\t1\nd\t4\n".into(), String::new()));
    assert_eq!(out[2], (0, "b\t2\nc\t3\n".into(), String::new()));
    assert_eq!(out[3], (0, "d\t4\nc\t3\nb\t2\n".into(), String::new()));
    assert_eq!(out[4], (0, "a\nb\n".into(), String::new()));
    assert_eq!(out[5], (0, "OK\n".into(), String::new()));
    assert_eq!(out[6], (0, "b\t2\nd\t4\n".into(), String::new()));
    assert_eq!(out[7], (0, "OK\n".into(), String::new()));
    assert_eq!(out[8], (0, "cafe\n".into(), String::new()));
    assert_eq!(out[9], (0, "00ff\tcafe\n".into(), String::new()));
    assert_eq!(out[10].0, 2, "{:?}", out[10]);
    assert!(out[10].2.contains("not hex"), "{:?}", out[10]);
    assert_eq!(out[11].0, 2, "{:?}", out[11]);
    assert_eq!(out[13], (0, "OK\n".into(), String::new()));
    assert_eq!(out[14], (0, "o\n".into(), String::new()));
    assert_eq!(
        out[15].0, 2,
        "an unbounded end is asked for, not assumed: {:?}",
        out[15]
    );
    server.shutdown().await.unwrap();
}

/// Global flags from `TESSERA_*` variables (the command line wins), `-w json` answers, and
/// `scan --prefix`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_environment_json_and_prefix_1() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&test_config(dir.path())).await;
    let addr = server.addr.to_string();
    let nobody = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = tokio::task::spawn_blocking(move || {
        let at = [("TESSERA_ADDR", addr.as_str())];
        vec![
            ctl_env(&at, &["batch-put", "p1", "a", "p2", "b", "q", "c"]),
            ctl_env(&at, &["-w", "json", "get", "p1"]),
            ctl_env(&at, &["-w", "json", "scan", "--prefix", "p"]),
            ctl_env(&[at[0], ("TESSERA_WRITE_OUT", "json")], &["put", "x", "y"]),
            ctl_env(&[at[0], ("TESSERA_HEX", "true")], &["get", "7031"]),
            ctl_env(&at, &["-w", "json", "cas", "new", "1", "--expect-absent"]),
            ctl_env(&at, &["-w", "json", "get", "missing"]),
            // A scheduler named on the command line wins over the address in the environment.
            ctl_env(&at, &["--scheduler", &nobody, "get", "p1"]),
        ]
    })
    .await
    .unwrap();
    assert_eq!(out[0], (0, "OK\n".into(), String::new()));
    assert_eq!(
        out[1],
        (
            0,
            "{\"kvs\":[{\"key\":\"p1\",\"value\":\"a\"}]}\n".into(),
            String::new()
        )
    );
    assert_eq!(
        out[2].1,
        "{\"kvs\":[{\"key\":\"p1\",\"value\":\"a\"},{\"key\":\"p2\",\"value\":\"b\"}]}\n"
    );
    assert_eq!(out[3], (0, "{\"ok\":true}\n".into(), String::new()));
    assert_eq!(out[4], (0, "61\n".into(), String::new()));
    assert_eq!(out[5].1, "{\"previous\":null,\"swapped\":true}\n");
    assert_eq!(out[6].0, 1);
    assert_eq!(out[6].1, "{\"kvs\":[]}\n");
    assert_eq!(out[7].0, 4, "{:?}", out[7]);
    assert!(out[7].2.contains("scheduler"), "{:?}", out[7]);
    server.shutdown().await.unwrap();
}
