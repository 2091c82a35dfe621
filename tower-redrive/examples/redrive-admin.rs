//! `redrive-admin`: inspect and manage a redrive dead-letter queue.
//!
//! ```text
//! cargo run -p tower-redrive --example redrive-admin --all-features -- --sqlite redrive.db list
//! cargo run -p tower-redrive --example redrive-admin --all-features -- --postgres postgres://… show 42
//! … requeue 42 | purge 42 | stats
//! ```
//!
//! It opens an existing queue only: a SQLite path that does not exist (or an empty file), or a
//! PostgreSQL database without the queue's tables, is an error unless `--create` is given — a
//! mistyped path must not become a new, empty queue. Errors are printed as one sentence on
//! stderr, with exit status 1 (2 for bad usage).

use std::{process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use tower_redrive::{
    Clock, EntryId, EntryRecord, EntryState, PostgresQueue, QueueError, RedriveQueue, SqliteQueue,
    SystemClock,
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
    /// Create the queue if there is none (a new SQLite file, or the tables in a PostgreSQL
    /// database that lacks them).
    #[arg(long)]
    create: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List dead letters (or pending/delivered entries with --state).
    List {
        /// pending, delivered or dead.
        #[arg(long, default_value = "dead", value_parser = state)]
        state: EntryState,
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

fn state(s: &str) -> Result<EntryState, String> {
    EntryState::parse(s)
        .ok_or_else(|| format!("`{s}` is not a state: use pending, delivered or dead"))
}

/// Why the command failed, as the sentence printed on stderr.
struct Failure(String);

impl From<QueueError> for Failure {
    fn from(e: QueueError) -> Self {
        Failure(e.to_string())
    }
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

async fn open(cli: &Cli) -> Result<Arc<dyn RedriveQueue>, Failure> {
    let opened: Result<Arc<dyn RedriveQueue>, QueueError> = match (&cli.sqlite, &cli.postgres) {
        (Some(path), _) if cli.create => SqliteQueue::open_or_create(path)
            .await
            .map(|q| Arc::new(q) as _),
        (Some(path), _) => SqliteQueue::open(path).await.map(|q| Arc::new(q) as _),
        (None, Some(url)) if cli.create => {
            PostgresQueue::connect(url).await.map(|q| Arc::new(q) as _)
        }
        (None, Some(url)) => PostgresQueue::connect_existing(url)
            .await
            .map(|q| Arc::new(q) as _),
        (None, None) => unreachable!("clap requires one of --sqlite and --postgres"),
    };
    opened.map_err(|e| match e {
        QueueError::NoQueue { .. } => Failure(format!("{e} (--create makes one)")),
        e => e.into(),
    })
}

/// Why `requeue` or `purge` did not apply to `id`: there is no such entry, or it is not a dead
/// letter.
async fn not_a_dead_letter(queue: &dyn RedriveQueue, id: i64) -> Failure {
    match queue.get(EntryId(id)).await {
        Ok(None) => Failure(format!("no entry {id}")),
        Ok(Some(e)) => Failure(format!("entry {id} is {}, not a dead letter", e.state)),
        Err(e) => e.into(),
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let queue = open(&cli).await?;
    match cli.command {
        Command::List {
            state,
            after,
            limit,
        } => {
            for e in queue.list(state, after.map(EntryId), limit).await? {
                println!("{}", line(&e));
            }
        }
        Command::Show { id } => {
            let e = queue
                .get(EntryId(id))
                .await?
                .ok_or_else(|| Failure(format!("no entry {id}")))?;
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
            if !queue.requeue(EntryId(id), SystemClock.now()).await? {
                return Err(not_a_dead_letter(&*queue, id).await);
            }
            println!("requeued entry {id}");
        }
        Command::Purge { id } => {
            if !queue.purge(EntryId(id)).await? {
                return Err(not_a_dead_letter(&*queue, id).await);
            }
            println!("purged entry {id}");
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(why)) => {
            eprintln!("redrive-admin: {why}");
            ExitCode::FAILURE
        }
    }
}
