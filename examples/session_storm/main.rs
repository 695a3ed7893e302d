//! The scenario this crate exists for: an identity-aware proxy gets a burst
//! of requests carrying the same identity-provider token, and each one runs
//! get-or-create-session. Without deduplication the callers all miss the
//! lookup, all verify, and all write a session: several sessions for one
//! token, and callers holding different session ids. Through a `Group`
//! keyed by token, one caller verifies and creates and the rest share its
//! session, or its error.
//!
//! ```sh
//! cargo run --release --example session_storm
//! cargo run --release --example session_storm -- --help
//! cargo run --release --features redis --example session_storm -- --replicas 3
//! ```
//!
//! With `--replicas N` the same bursts are spread over N processes sharing
//! one SQLite file, with a `Group` per replica and with one `RedisGroup`
//! across them (see `replicas.rs`).

#[cfg(feature = "redis")]
#[path = "../shared/fleet.rs"]
mod fleet;
#[cfg(feature = "redis")]
mod paused;
#[cfg(feature = "redis")]
mod replicas;
#[cfg(feature = "redis")]
#[path = "../shared/scratch.rs"]
mod scratch;
mod sessions;
#[path = "../shared/table.rs"]
mod table;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, error::ErrorKind};
use indicatif::{ProgressBar, ProgressStyle};
use sessions::{Figures, Provider, Proxy, Store};
use sync_singleflight::Group;
use table::{count, ms, print_table};

/// Bursts of requests carrying the same identity-provider token hit a
/// get-or-create-session handler over SQLite, first called directly, then
/// through sync-singleflight's `Group::work` keyed by token.
#[derive(Parser, Debug)]
#[command(name = "session_storm")]
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // the replica mode's fields
struct Options {
    /// Threads per burst, released together (2 to 2048)
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(2..=2048))]
    threads: u16,
    /// How long the provider's verify call blocks, in milliseconds (1 to
    /// 10000). The group shares only calls that overlap: the verification
    /// must outlast the time the burst's threads take to get going
    #[arg(long, value_name = "MS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    verify_ms: u64,
    /// Distinct tokens in the second burst; the last one has expired (2 to
    /// --threads)
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(2..=2048))]
    tokens: u16,
    /// Spread each burst over N processes sharing one SQLite file, with a
    /// Group per replica and with one Redis group across them (needs
    /// `--features redis` and redis-server on PATH)
    /// (1 to 16)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16))]
    replicas: Option<u16>,
    /// Internal: run as one replica in this mode (direct, group or redis)
    #[arg(long, hide = true, value_name = "MODE")]
    replica_of: Option<String>,
    /// Internal: the replicas' SQLite file
    #[arg(long, hide = true, value_name = "FILE")]
    store: Option<std::path::PathBuf>,
    /// Internal: the replicas' Redis
    #[arg(long, hide = true, value_name = "URL")]
    redis_url: Option<String>,
    /// Internal: this replica's callers' tokens, comma-separated
    #[arg(long, hide = true, value_name = "TOKENS", value_delimiter = ',')]
    callers: Vec<String>,
    /// Internal: in a paused run, this replica's leader waits inside its
    /// verification for the parent
    #[arg(long, hide = true)]
    pause: bool,
}

const EXPIRED: &str = "tok-expired";

/// The columns of [`row`].
const HEADER: [&str; 8] = [
    "burst",
    "path",
    "verifications",
    "sessions written",
    "ids seen per token",
    "errors",
    "p50",
    "p99",
];

/// The provider knows `tok-user1` .. `tok-userN` and one expired token.
fn provider(options: &Options) -> Provider {
    let mut provider = Provider::new(Duration::from_millis(options.verify_ms));
    for n in 1..options.tokens {
        provider = provider.issue(&format!("tok-user{n}"), &format!("user{n}"), false);
    }
    provider.issue(EXPIRED, "former-user", true)
}

fn proxy(options: &Options, grouped: bool) -> rusqlite::Result<Proxy> {
    Ok(Proxy {
        store: Store::open()?,
        provider: provider(options),
        group: grouped.then(|| Arc::new(Group::new())),
    })
}

/// Each caller's token: round-robin over `tokens`.
fn callers(options: &Options, tokens: &[String]) -> Vec<String> {
    (0..options.threads as usize)
        .map(|i| tokens[i % tokens.len()].clone())
        .collect()
}

fn row(burst: &str, path: &str, f: &Figures) -> Vec<String> {
    let ids: Vec<String> = f.ids_per_token.values().map(usize::to_string).collect();
    let errors = match (f.errors, f.error_instances) {
        (n @ (0 | 1), _) => n.to_string(),
        (n, 1) if n > 1 => format!("{n} (1 shared)"),
        (n, k) => format!("{n} ({k} separate)"),
    };
    vec![
        burst.to_string(),
        path.to_string(),
        f.verifications.to_string(),
        f.sessions_written.to_string(),
        ids.join(" / "),
        errors,
        ms(f.p50),
        ms(f.p99),
    ]
}

/// What the group promises for one burst: one verification per distinct
/// token, one session per valid token, one id per token, one shared error.
fn grouped_as_promised(f: &Figures, tokens: &[String]) -> bool {
    let valid = tokens.iter().filter(|t| *t != EXPIRED).count();
    let expired_callers = tokens.iter().any(|t| t == EXPIRED);
    f.verifications == tokens.len() as u64
        && f.sessions_written == valid as u64
        && f.ids_per_token.len() == valid
        && f.ids_per_token.values().all(|&ids| ids == 1)
        && f.error_instances == usize::from(expired_callers)
}

/// The two bursts: one token, then a handful with the expired one last.
fn bursts(options: &Options) -> [(String, Vec<String>); 2] {
    let mut distinct: Vec<String> = (1..options.tokens)
        .map(|n| format!("tok-user{n}"))
        .collect();
    distinct.push(EXPIRED.to_string());
    [
        ("1 token".to_string(), vec!["tok-user1".to_string()]),
        (format!("{} tokens, 1 expired", options.tokens), distinct),
    ]
}

fn main() -> ExitCode {
    let options = Options::parse();
    #[cfg(feature = "redis")]
    if let Some(mode) = &options.replica_of {
        if mode.starts_with("paused") {
            return paused::serve(mode, &options);
        }
        return replicas::serve(mode, &options);
    }
    if options.tokens > options.threads {
        Options::command()
            .error(
                ErrorKind::ArgumentConflict,
                format!(
                    "--tokens {} needs at least {} so that every token has a caller (got --threads {})",
                    options.tokens,
                    count(options.tokens.into(), "thread"),
                    options.threads
                ),
            )
            .exit();
    }
    let bursts = bursts(&options);
    if let Some(replicas) = options.replicas {
        #[cfg(feature = "redis")]
        return replicas::run(replicas.into(), &options, &bursts);
        #[cfg(not(feature = "redis"))]
        {
            let _ = bursts;
            eprintln!(
                "session_storm: --replicas {replicas} needs the Redis group: add --features redis, as in \
                 `cargo run --release --features redis --example session_storm -- --replicas {replicas}`"
            );
            return ExitCode::from(2);
        }
    }
    println!(
        "{} per burst, released together; the provider takes {} ms per verification\n",
        count(options.threads.into(), "thread"),
        options.verify_ms
    );

    let mut rows = Vec::new();
    let mut broken_promises = Vec::new();
    let mut shared_error = None;
    // Each burst lasts at least one verification (up to 10 s): on a
    // terminal, a bar says which one is running.
    let bar = ProgressBar::new(2 * bursts.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("[{bar:20}] {pos}/{len} bursts {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    for (burst, tokens) in &bursts {
        let callers = callers(&options, tokens);
        for (path, grouped) in [("handler directly", false), ("Group::work", true)] {
            bar.set_message(format!("{burst}, {path}"));
            let proxy = match proxy(&options, grouped) {
                Ok(proxy) => proxy,
                Err(e) => {
                    eprintln!("session_storm: creating the SQLite store: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let sessions::Burst {
                calls,
                arrival_spread,
            } = match sessions::burst(&proxy, &callers) {
                Ok(calls) => calls,
                Err(message) => {
                    eprintln!("session_storm: {message}");
                    return ExitCode::FAILURE;
                }
            };
            let figures = Figures::of(&proxy, &calls);
            if grouped && !grouped_as_promised(&figures, tokens) {
                let reason = why_not(burst, &figures, tokens, arrival_spread, &options);
                broken_promises.push(reason);
            }
            if grouped && figures.error_instances == 1 {
                shared_error = calls
                    .iter()
                    .find_map(|c| c.result.as_ref().err().map(|e| e.to_string()));
            }
            rows.push(row(burst, path, &figures));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    print_table(2, &HEADER, &rows);
    if let Some(error) = shared_error {
        println!("\nevery caller of {EXPIRED} got the same Arc<AuthError>: \"{error}\"");
    }
    let kept_promise = broken_promises.is_empty();
    println!(
        "with Group::work, one verification, one session and one id per token in every burst: {}",
        if kept_promise { "yes" } else { "NO" }
    );
    for reason in &broken_promises {
        eprintln!("session_storm: {reason}");
    }
    if kept_promise {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Why a grouped burst did more than one verification per token, in one
/// line. The usual cause is not a fault: callers that start after a flight
/// has landed find nothing in flight and start one of their own.
fn why_not(
    burst: &str,
    f: &Figures,
    tokens: &[String],
    arrival_spread: Duration,
    options: &Options,
) -> String {
    let counts = format!(
        "burst \"{burst}\": {} and {} for {}",
        count(f.verifications as usize, "verification"),
        count(f.sessions_written as usize, "session"),
        count(tokens.len(), "token"),
    );
    let verify = Duration::from_millis(options.verify_ms);
    if arrival_spread >= verify {
        format!(
            "{counts}: the {} threads took {} to get going, longer than one {} ms verification, \
             so late callers found the flight landed and started their own; \
             raise --verify-ms or lower --threads",
            options.threads,
            ms(arrival_spread),
            options.verify_ms,
        )
    } else {
        format!(
            "{counts}, though every thread started within {} of the first",
            ms(arrival_spread)
        )
    }
}
