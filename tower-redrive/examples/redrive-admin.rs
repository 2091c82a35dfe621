//! `redrive-admin`: inspect and manage a redrive dead-letter queue.
//!
//! ```text
//! cargo run -p tower-redrive --example redrive-admin --all-features -- --sqlite redrive.db list
//! cargo run -p tower-redrive --example redrive-admin --all-features -- --postgres postgres://… show 42
//! … requeue 42 | purge 42 | stats
//! ```

use std::{error::Error, sync::Arc};

use clap::{Parser, Subcommand};
use tower_redrive::{
    Clock, EntryId, EntryRecord, EntryState, PostgresQueue, RedriveQueue, SqliteQueue, SystemClock,
};

#[derive(Debug, Parser)]
#[command(
    name = "redrive-admin",
    about = "Inspect and manage a redrive dead-letter queue"
)]
struct Cli {
    /// A SQLite queue file.
    #[arg(
        long,
        conflicts_with = "postgres",
        required_unless_present = "postgres"
    )]
    sqlite: Option<std::path::PathBuf>,
    /// A PostgreSQL connection string.
    #[arg(long)]
    postgres: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List dead letters (or pending/delivered entries with --state).
    List {
        /// pending, delivered or dead.
        #[arg(long, default_value = "dead")]
        state: String,
        /// Show entries with an id greater than this.
        #[arg(long)]
        after: Option<i64>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one entry with its attempt history.
    Show {
        /// The entry id.
        id: i64,
    },
    /// Move a dead letter back to the queue, due now, with a fresh schedule.
    Requeue {
        /// The entry id.
        id: i64,
    },
    /// Delete a dead letter.
    Purge {
        /// The entry id.
        id: i64,
    },
    /// Counts and the age of the oldest pending entry.
    Stats,
}

fn line(e: &EntryRecord) -> String {
    format!(
        "{:>8}  {:<9}  {:>3} attempts  {} {}  {}",
        e.id,
        e.state,
        e.attempts,
        e.method,
        e.uri,
        e.reason.as_deref().unwrap_or("")
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let cli = Cli::parse();
    let queue: Arc<dyn RedriveQueue> = match (&cli.sqlite, &cli.postgres) {
        (Some(path), _) => Arc::new(SqliteQueue::open(path).await?),
        (None, Some(url)) => Arc::new(PostgresQueue::connect(url).await?),
        (None, None) => unreachable!("clap requires one of --sqlite and --postgres"),
    };
    match cli.command {
        Command::List {
            state,
            after,
            limit,
        } => {
            let state =
                EntryState::parse(&state).ok_or("state must be pending, delivered or dead")?;
            for e in queue.list(state, after.map(EntryId), limit).await? {
                println!("{}", line(&e));
            }
        }
        Command::Show { id } => {
            let e = queue
                .get(EntryId(id))
                .await?
                .ok_or(format!("no entry {id}"))?;
            println!("{}", line(&e));
            println!("idempotency key: {}", e.idempotency_key);
            if let Some(k) = &e.ordering_key {
                println!("ordering key:    {k}");
            }
            println!("body:            {} bytes", e.body_len);
            println!("queued:          {}", e.enqueued_at);
            if let (Some(first), Some(last)) = (e.first_attempt_at, e.last_attempt_at) {
                println!("attempts:        first {first}, last {last}");
            }
            for a in &e.history {
                println!(
                    "  #{:<3} {}  {:<9} {}",
                    a.attempt,
                    a.at(),
                    a.class,
                    a.outcome
                );
            }
        }
        Command::Requeue { id } => {
            if queue.requeue(EntryId(id), SystemClock.now()).await? {
                println!("requeued {id}");
            } else {
                return Err(format!("{id} is not a dead letter").into());
            }
        }
        Command::Purge { id } => {
            if queue.purge(EntryId(id)).await? {
                println!("purged {id}");
            } else {
                return Err(format!("{id} is not a dead letter").into());
            }
        }
        Command::Stats => {
            let s = queue.stats().await?;
            println!(
                "pending {}  dead {}  delivered {}",
                s.pending, s.dead, s.delivered
            );
            if let Some(oldest) = s.oldest_pending {
                println!(
                    "oldest pending queued {} ({} s ago)",
                    oldest,
                    SystemClock.now().since(oldest).as_secs()
                );
            }
        }
    }
    Ok(())
}
