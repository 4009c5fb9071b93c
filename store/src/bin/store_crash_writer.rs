//! A test tool, not part of flotilla: opens an embedded store and writes a
//! burst from several concurrent writers, printing `ack KEY VALUE` for each
//! key only after its write was acknowledged. `tests/store_crash.rs` kills
//! it with SIGKILL mid-burst and checks that every acknowledged key survived.
//!
//! Usage: `flotilla-store-crash-writer DIR RUN WRITERS SNAPSHOT_THRESHOLD`
//!
//! It stops by itself after a bounded number of writes.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use flotilla_store::{EmbeddedOptions, EmbeddedStore, Store, Txn, TxnOp};

/// Writes per writer before the tool stops by itself.
const MAX_WRITES: usize = 100_000;

struct Args {
    dir: String,
    run: u64,
    writers: usize,
    snapshot_threshold: u64,
}

fn parse_args() -> Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, run, writers, threshold] = args.as_slice() else {
        return Err("usage: flotilla-store-crash-writer DIR RUN WRITERS SNAPSHOT_THRESHOLD".into());
    };
    let number = |what: &str, s: &str| {
        s.parse::<u64>()
            .map_err(|e| format!("bad {what} {s:?}: {e}"))
    };
    Ok(Args {
        dir: dir.clone(),
        run: number("run", run)?,
        writers: usize::try_from(number("writer count", writers)?)
            .map_err(|e| format!("bad writer count: {e}"))?,
        snapshot_threshold: number("snapshot threshold", threshold)?,
    })
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|args| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?
            .block_on(burst(args))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flotilla-store-crash-writer: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn burst(args: Args) -> Result<(), String> {
    let options = EmbeddedOptions {
        snapshot_threshold: args.snapshot_threshold,
        ..EmbeddedOptions::default()
    };
    let (store, recovery) = EmbeddedStore::open(&args.dir, options)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("opened: {recovery:?}");
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for writer in 0..args.writers {
        let store = store.clone();
        let run = args.run;
        tasks.push(tokio::spawn(async move {
            write_burst(&*store, run, writer).await
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    store.close().await;
    Ok(())
}

/// One writer: single puts, and every fourth write a transaction of three
/// keys (which must survive all together).
async fn write_burst(store: &dyn Store, run: u64, writer: usize) -> Result<(), String> {
    for n in 0..MAX_WRITES {
        let keys: Vec<String> = if n % 4 == 3 {
            (0..3)
                .map(|i| format!("/crash/{run}/{writer}/{n}/{i}"))
                .collect()
        } else {
            vec![format!("/crash/{run}/{writer}/{n}")]
        };
        let txn = Txn::new().and_then(
            keys.iter()
                .map(|key| TxnOp::put(key.as_str(), value_for(key).into_bytes())),
        );
        store.txn(txn).await.map_err(|e| e.to_string())?;
        // Acknowledged: only now may the test count on it.
        let mut out = std::io::stdout().lock();
        for key in &keys {
            writeln!(out, "ack {key} {}", value_for(key)).map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn value_for(key: &str) -> String {
    format!("value-of-{key}")
}
