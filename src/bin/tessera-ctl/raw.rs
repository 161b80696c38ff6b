//! The raw commands of `tessera-ctl`: one server's API (`--addr`) or the whole cluster's
//! (`--scheduler`). With `--hex`, keys and values on the command line and in the output are
//! hexadecimal, so binary keys can be written and read.

use clap::Subcommand;
use tessera_client::cluster::{ClusterClient, ClusterError};
use tessera_client::raw::{CasResult, ClientError, RawClient};
use tessera_client::{Pairs, ScanRange};

use crate::Failure;

#[derive(Subcommand, Debug)]
pub(crate) enum RawCmd {
    /// Print the value of KEY
    Get { key: String },
    /// Set KEY to VALUE (--ttl: for SECS seconds, after which KEY reads as absent)
    Put {
        key: String,
        value: String,
        /// Seconds the key lives (0: for ever)
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        ttl: u64,
    },
    /// Delete KEY
    Delete { key: String },
    /// Set KEY to NEW if it holds OLD (--expect) or is absent (--expect-absent), atomically;
    /// prints "swapped" or "not swapped", then "previous: VALUE" or "previous absent"
    Cas {
        key: String,
        new: String,
        #[command(flatten)]
        expect: Expect,
    },
    /// Print up to LIMIT pairs of [START, END), one "key TAB value" per line (--keys-only: one
    /// key per line); --reverse from the last key below END down
    Scan {
        /// First key (inclusive)
        #[arg(long, default_value = "", conflicts_with = "prefix")]
        start: String,
        /// End of the range (exclusive); empty is unbounded
        #[arg(long, default_value = "", conflicts_with = "prefix")]
        end: String,
        /// Every key starting with PREFIX (instead of --start/--end)
        #[arg(long)]
        prefix: Option<String>,
        /// The most pairs to print
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Largest keys first
        #[arg(long)]
        reverse: bool,
        /// Print keys only
        #[arg(long)]
        keys_only: bool,
    },
    /// Print "key TAB value" for each KEY that is present (in key order)
    BatchGet {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Set each KEY to its VALUE: `batch-put k1 v1 k2 v2` (one write per region)
    BatchPut {
        #[arg(required = true, num_args = 2.., value_names = ["KEY", "VALUE"])]
        pairs: Vec<String>,
        /// Seconds every key lives (0: for ever)
        #[arg(long, value_name = "SECS", default_value_t = 0)]
        ttl: u64,
    },
    /// Delete each KEY (one write per region)
    BatchDelete {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Delete every key of [START, END) (one write per region); both are required, an empty
    /// END meaning to the last key: `delete-range --start a --end ''`
    DeleteRange {
        /// First key deleted
        #[arg(long)]
        start: String,
        /// End of the range (exclusive); empty is unbounded
        #[arg(long)]
        end: String,
    },
}

/// What `cas` expects KEY to hold: exactly one of the two.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct Expect {
    /// Swap only if KEY holds OLD
    #[arg(long, value_name = "OLD")]
    expect: Option<String>,
    /// Swap only if KEY is absent
    #[arg(long)]
    expect_absent: bool,
}

/// The exit code of a `cas` that compared and did not swap.
const CAS_REFUSED: u8 = 6;
/// The exit code of bad usage (a malformed hex argument among them).
const USAGE: u8 = 2;

/// Where raw commands go: one server, or the whole cluster.
pub(crate) enum Raw {
    One(RawClient),
    Cluster(ClusterClient),
}

/// Dispatches one call to whichever client `$raw` holds (their methods share names and
/// arguments).
macro_rules! either {
    ($raw:expr, $method:ident($($arg:expr),*)) => {
        match $raw {
            Raw::One(c) => c.$method($($arg),*).await?,
            Raw::Cluster(c) => c.$method($($arg),*).await?,
        }
    };
}

/// How commands print their answers.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteOut {
    /// Lines: a value, `key TAB value`, `OK`
    Simple,
    /// One JSON object
    Json,
}

/// How keys and values are written on the command line and printed.
#[derive(Clone, Copy)]
pub(crate) struct Text {
    pub(crate) hex: bool,
    pub(crate) json: bool,
}

impl Text {
    pub(crate) fn bytes(self, s: &str) -> Result<Vec<u8>, String> {
        if !self.hex {
            return Ok(s.as_bytes().to_vec());
        }
        if s.len() % 2 != 0 {
            return Err(format!("{s:?} is not hex: odd length"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|d| u8::from_str_radix(d, 16).ok())
                    .ok_or_else(|| format!("{s:?} is not hex"))
            })
            .collect()
    }

    pub(crate) fn show(self, b: &[u8]) -> String {
        if self.hex {
            b.iter().map(|x| format!("{x:02x}")).collect()
        } else {
            String::from_utf8_lossy(b).into_owned()
        }
    }

    pub(crate) fn all(self, list: &[String]) -> Result<Vec<Vec<u8>>, String> {
        list.iter().map(|s| self.bytes(s)).collect()
    }

    /// Prints pairs: `key TAB value` lines (keys alone with `keys_only`), or
    /// `{"kvs":[{"key":..,"value":..}]}`.
    pub(crate) fn print_pairs(self, pairs: &Pairs, keys_only: bool) {
        if self.json {
            let kvs: Vec<serde_json::Value> = pairs
                .iter()
                .map(|(k, v)| {
                    let mut o = serde_json::json!({ "key": self.show(k) });
                    if !keys_only {
                        o["value"] = self.show(v).into();
                    }
                    o
                })
                .collect();
            println!("{}", serde_json::json!({ "kvs": kvs }));
            return;
        }
        for (k, v) in pairs {
            if keys_only {
                println!("{}", self.show(k));
            } else {
                println!("{}\t{}", self.show(k), self.show(v));
            }
        }
    }

    /// Prints the acknowledgement of a write.
    /// Prints what a get of `key` (`arg` on the command line) found; the exit code: 0, or 1
    /// when the key is absent.
    pub(crate) fn print_found(self, arg: &str, key: Vec<u8>, value: Option<Vec<u8>>) -> u8 {
        match value {
            Some(v) if self.json => self.print_pairs(&vec![(key, v)], false),
            Some(v) => println!("{}", self.show(&v)),
            None => {
                if self.json {
                    self.print_pairs(&Vec::new(), false);
                }
                eprintln!("key not found: {arg}");
                return 1;
            }
        }
        0
    }

    fn print_ok(self) {
        if self.json {
            println!("{}", serde_json::json!({ "ok": true }));
        } else {
            println!("OK");
        }
    }

    /// Prints the acknowledgement of a transaction's commit: `OK (committed at TS)`, or
    /// `{"ok":true,"commit_ts":TS}`.
    pub(crate) fn print_committed(self, commit_ts: u64) {
        if self.json {
            println!(
                "{}",
                serde_json::json!({ "ok": true, "commit_ts": commit_ts })
            );
        } else {
            println!("OK (committed at {commit_ts})");
        }
    }
}

pub(crate) async fn run_raw(
    client: &mut Raw,
    cf: &str,
    hex: bool,
    write_out: WriteOut,
    cmd: RawCmd,
) -> Result<u8, Failure> {
    let text = Text {
        hex,
        json: write_out == WriteOut::Json,
    };
    match run(client, cf, text, cmd).await {
        Ok(code) => Ok(code),
        Err(Usage::Bad(e)) => {
            eprintln!("error: {e}");
            Ok(USAGE)
        }
        Err(Usage::Failed(f)) => Err(f),
    }
}

/// A command that could not run: bad arguments, or the request failed.
enum Usage {
    Bad(String),
    Failed(Failure),
}

impl From<ClientError> for Usage {
    fn from(e: ClientError) -> Self {
        Usage::Failed(e.into())
    }
}

impl From<ClusterError> for Usage {
    fn from(e: ClusterError) -> Self {
        Usage::Failed(e.into())
    }
}

async fn run(client: &mut Raw, cf: &str, text: Text, cmd: RawCmd) -> Result<u8, Usage> {
    let arg = |s: &str| text.bytes(s).map_err(Usage::Bad);
    match cmd {
        RawCmd::Get { key } => {
            let k = arg(&key)?;
            let found = either!(client, get(cf, &k));
            return Ok(text.print_found(&key, k, found));
        }
        RawCmd::Put { key, value, ttl } => {
            either!(client, put_with_ttl(cf, &arg(&key)?, &arg(&value)?, ttl));
            text.print_ok();
        }
        RawCmd::Delete { key } => {
            either!(client, delete(cf, &arg(&key)?));
            text.print_ok();
        }
        RawCmd::Cas { key, new, expect } => {
            let old = expect.expect.as_deref().map(arg).transpose()?;
            let out: CasResult = either!(
                client,
                compare_and_swap(cf, &arg(&key)?, old.as_deref(), &arg(&new)?)
            );
            if text.json {
                let previous = out.previous.as_deref().map(|v| text.show(v));
                let answer = serde_json::json!({ "swapped": out.succeed, "previous": previous });
                println!("{answer}");
            } else {
                println!(
                    "{}",
                    if out.succeed {
                        "swapped"
                    } else {
                        "not swapped"
                    }
                );
                match &out.previous {
                    Some(v) => println!("previous: {}", text.show(v)),
                    None => println!("previous absent"),
                }
            }
            if !out.succeed {
                return Ok(CAS_REFUSED);
            }
        }
        RawCmd::Scan {
            start,
            end,
            prefix,
            limit,
            reverse,
            keys_only,
        } => {
            let mut range = match prefix {
                Some(p) => ScanRange::prefix(&arg(&p)?, limit),
                None => ScanRange::new(&arg(&start)?, &arg(&end)?, limit),
            };
            range.reverse = reverse;
            range.key_only = keys_only;
            let pairs = either!(client, scan_range(cf, &range));
            text.print_pairs(&pairs, keys_only);
        }
        RawCmd::BatchGet { keys } => {
            let keys = text.all(&keys).map_err(Usage::Bad)?;
            let mut pairs = either!(client, batch_get(cf, &keys));
            pairs.sort();
            text.print_pairs(&pairs, false);
        }
        RawCmd::BatchPut { pairs, ttl } => {
            if pairs.len() % 2 != 0 {
                return Err(Usage::Bad("batch-put takes KEY VALUE pairs".into()));
            }
            let flat = text.all(&pairs).map_err(Usage::Bad)?;
            let pairs: Pairs = flat
                .chunks(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect();
            either!(client, batch_put_with_ttl(cf, &pairs, ttl));
            text.print_ok();
        }
        RawCmd::BatchDelete { keys } => {
            let keys = text.all(&keys).map_err(Usage::Bad)?;
            either!(client, batch_delete(cf, &keys));
            text.print_ok();
        }
        RawCmd::DeleteRange { start, end } => {
            either!(client, delete_range(cf, &arg(&start)?, &arg(&end)?));
            text.print_ok();
        }
    }
    Ok(0)
}
