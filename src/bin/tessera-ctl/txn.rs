//! `tessera-ctl txn`: one transaction, on one server or through the whole cluster.

use std::sync::Arc;

use clap::Subcommand;
use scheduler_client::{RpcClient, RpcClientConfig, SchedulerClient};
use tessera_client::cluster::{ClusterClient, ClusterConfig};
use tessera_client::txn::{TxnClient, TxnError};

use crate::raw::Text;
use crate::{tls, Failure};

#[derive(Subcommand, Debug)]
pub enum TxnCmd {
    /// Print the value of KEY as of a fresh timestamp
    Get { key: String },
    /// Set KEY to VALUE, and more pairs, atomically: `txn put k1 v1 k2 v2`
    Put {
        #[arg(required = true, num_args = 2.., value_names = ["KEY", "VALUE"])]
        pairs: Vec<String>,
    },
    /// Delete the KEYs atomically
    Delete {
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// Runs one transaction: on the server at `addr`, or, without it, through the whole cluster of
/// the scheduler (each request to the leader of its key's region).
pub async fn run_txn(
    addr: Option<&str>,
    scheduler: &str,
    text: Text,
    cmd: TxnCmd,
) -> Result<u8, Failure> {
    // Arguments are checked before any connection is made.
    let arg = |s: &String| text.bytes(s);
    let parsed = match &cmd {
        TxnCmd::Get { key } => text.all(std::slice::from_ref(key)),
        TxnCmd::Put { pairs } if pairs.len() % 2 != 0 => {
            Err("txn put takes KEY VALUE pairs".to_string())
        }
        TxnCmd::Put { pairs } => text.all(pairs),
        TxnCmd::Delete { keys } => keys.iter().map(arg).collect(),
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(2);
        }
    };
    let sched = scheduler.to_string();
    // A command-line user wants a prompt answer when the scheduler is down, not ten seconds of
    // retries.
    let config = RpcClientConfig {
        startup_timeout: std::time::Duration::from_secs(2),
        tls: crate::tls(),
        ..RpcClientConfig::default()
    };
    let tso = tokio::task::spawn_blocking(move || RpcClient::connect(&sched, config))
        .await
        .map_err(|e| TxnError::Tso(e.to_string()))?
        .map_err(|e| TxnError::Tso(e.to_string()))?;
    let tso: Arc<dyn SchedulerClient> = Arc::new(tso);
    let client = match addr {
        Some(addr) => TxnClient::connect_with(addr, tso, tls().as_ref()).await?,
        None => TxnClient::routed(
            ClusterClient::new(tso.clone(), ClusterConfig::default()),
            tso,
        ),
    };
    let mut txn = client.begin().await?;
    match cmd {
        TxnCmd::Get { key } => {
            let found = txn.get(&parsed[0]).await?;
            return Ok(text.print_found(&key, parsed[0].clone(), found));
        }
        TxnCmd::Put { .. } => {
            for kv in parsed.chunks(2) {
                txn.put(&kv[0], &kv[1]);
            }
            text.print_committed(txn.commit().await?);
        }
        TxnCmd::Delete { .. } => {
            for k in &parsed {
                txn.delete(k);
            }
            text.print_committed(txn.commit().await?);
        }
    }
    Ok(0)
}
