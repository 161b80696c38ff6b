//! `tessera-ctl`: a command-line client of a Tessera server's raw API.
//!
//! Exit codes: 0 success, 1 key not found (`get`), 2 bad usage, 3 the server rejected the
//! request, 4 the server could not be reached or the RPC failed.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tessera::client::{ClientError, RawClient};

/// Talk to a Tessera server.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Server gRPC address
    #[arg(long, default_value = "127.0.0.1:20160", global = true)]
    addr: String,
    /// Column family: default, lock or write
    #[arg(long, default_value = "default", global = true)]
    cf: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print the value of KEY
    Get { key: String },
    /// Set KEY to VALUE
    Put { key: String, value: String },
    /// Delete KEY
    Delete { key: String },
    /// Print up to LIMIT pairs from START, one "key<TAB>value" per line
    Scan {
        /// First key (inclusive)
        #[arg(long, default_value = "")]
        start: String,
        /// The most pairs to print
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::Server(_) | ClientError::Region(_) => 3,
        ClientError::Connect { .. } | ClientError::Rpc(_) => 4,
    }
}

async fn run(args: Args) -> Result<u8, ClientError> {
    let mut client = RawClient::connect(&args.addr).await?;
    let cf = args.cf.as_str();
    match args.cmd {
        Cmd::Get { key } => match client.get(cf, key.as_bytes()).await? {
            Some(v) => println!("{}", String::from_utf8_lossy(&v)),
            None => {
                eprintln!("key not found: {key}");
                return Ok(1);
            }
        },
        Cmd::Put { key, value } => {
            client.put(cf, key.as_bytes(), value.as_bytes()).await?;
            println!("OK");
        }
        Cmd::Delete { key } => {
            client.delete(cf, key.as_bytes()).await?;
            println!("OK");
        }
        Cmd::Scan { start, limit } => {
            for (k, v) in client.scan(cf, start.as_bytes(), limit).await? {
                println!(
                    "{}\t{}",
                    String::from_utf8_lossy(&k),
                    String::from_utf8_lossy(&v)
                );
            }
        }
    }
    Ok(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(exit_code(&e))
        }
    }
}
