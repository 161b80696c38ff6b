//! The chaos harness end to end: a short checked run under every nemesis kind passes, and the
//! same check fails when a store serves reads unsafely (proof that the check can fail).

use std::process::Command;

/// Runs `tessera-chaos` with `args` (and a private output directory); returns whether it
/// passed, what it printed, and the output directory.
fn chaos(args: &[&str]) -> (bool, String, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_tessera-chaos"))
        .args(args)
        .arg("--out-dir")
        .arg(out.path())
        .output()
        .expect("run tessera-chaos");
    let text = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    (run.status.success(), text, out)
}

/// The number after `label: ` in the harness's summary.
fn figure(text: &str, label: &str) -> usize {
    let at = text
        .find(&format!("{label}: "))
        .unwrap_or_else(|| panic!("no {label:?} in:\n{text}"));
    text[at + label.len() + 2..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in:\n{text}"))
}

#[test]
fn chaos_short_run_is_linearizable_3b() {
    let (passed, text, _out) = chaos(&["--seed", "1", "--secs", "20"]);
    assert!(passed, "{text}");
    assert_eq!(figure(&text, "violations"), 0, "{text}");
    assert_eq!(figure(&text, "lost acknowledged writes"), 0, "{text}");
    assert!(text.contains("PASS"), "{text}");
    // It did something: operations of every kind went through.
    for kind in ["get", "put", "delete"] {
        assert!(text.contains(&format!("{kind} ")), "{text}");
    }
}

#[test]
fn chaos_catches_unsafe_local_reads_3b() {
    let (passed, text, out) = chaos(&[
        "--seed",
        "1",
        "--secs",
        "20",
        "--schedule",
        "isolate-leader",
        "--unsafe-local-reads",
    ]);
    assert!(!passed, "stale reads went unnoticed:\n{text}");
    assert!(figure(&text, "violations") >= 1, "{text}");
    assert!(text.contains("VIOLATION history of key"), "{text}");
    assert!(text.contains("replay: tessera-chaos --seed 1"), "{text}");
    // The evidence: the report and the history as porcupine JSON.
    let dir = out.path().join("seed-1");
    let report = std::fs::read_to_string(dir.join("report.txt")).unwrap();
    assert!(report.contains("VIOLATION"), "{report}");
    let history = std::fs::read_to_string(dir.join("history.json")).unwrap();
    let ops: Vec<serde_json::Value> = serde_json::from_str(&history).unwrap();
    assert!(!ops.is_empty());
    for field in ["clientId", "input", "call", "output", "return"] {
        assert!(ops[0].get(field).is_some(), "{field} missing: {}", ops[0]);
    }
}
