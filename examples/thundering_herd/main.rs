//! The crate's main job, end to end: a threaded HTTP server over embedded
//! SQLite, hit by a burst of concurrent requests for a few hot users, once
//! with the lookup called directly and once through `Group::work`.
//!
//! ```sh
//! cargo run --release --example thundering_herd
//! cargo run --release --example thundering_herd -- --help
//! cargo run --release --features redis --example thundering_herd -- --replicas 3
//! ```
//!
//! With `--replicas N` it runs N server processes over one SQLite file and
//! compares a `Group` per replica with a `RedisGroup` shared through a
//! `redis-server` it starts itself (see `replicas.rs`).
//!
//! Everything stays on 127.0.0.1 and the demo stops by itself.

mod app;
#[cfg(feature = "redis")]
#[path = "../shared/fleet.rs"]
mod fleet;
mod limits;
#[cfg(feature = "redis")]
mod replicas;
#[path = "../shared/scratch.rs"]
mod scratch;
#[path = "../shared/table.rs"]
mod table;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::{App, Database, Reply, Server, User};
use clap::builder::RangedU64ValueParser;
use clap::{CommandFactory, Parser, error::ErrorKind};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sync_singleflight::Group;
use table::{count, ms, percentile, print_table};

// The largest values each option accepts: what a 2-core laptop with default
// limits can actually run in minutes, not what the types could hold.
const MAX_REQUESTS: u64 = 100_000;
const MAX_CONCURRENCY: u64 = 1024;
const MAX_USERS: u64 = 1_000_000;
const MAX_QUERY_MS: u64 = 10_000;
const MAX_CONNECTIONS: u64 = 256;
const MAX_REPLICAS: u64 = 16;
const MAX_BURSTS: u64 = 1000;
/// The slowest row (the one without singleflight) must end within this.
const LONGEST_RUN: Duration = Duration::from_secs(10 * 60);

/// A burst of HTTP requests for a few hot users, over embedded SQLite, first
/// with the lookup called directly, then through sync-singleflight's
/// `Group::work`. Everything runs on 127.0.0.1 and stops by itself.
#[derive(Parser, Debug)]
#[command(name = "thundering_herd")]
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // the replica mode's fields
struct Options {
    /// Requests per burst (1 to 100000)
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = between(1, MAX_REQUESTS))]
    requests: usize,
    /// Concurrent clients, and as many server threads (1 to 1024)
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = between(1, MAX_CONCURRENCY))]
    concurrency: usize,
    /// Distinct ids the burst cycles over: users 1 to N-1, and one id past
    /// the last user, which does not exist and is answered with a shared 404.
    /// With 1, the burst asks for user 1 only and sees no 404s (1 to
    /// --users + 1)
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = between(1, MAX_USERS + 1))]
    hot_keys: usize,
    /// Rows in the users table (1 to 1000000)
    #[arg(long, value_name = "N", default_value_t = 5000, value_parser = between(1, MAX_USERS))]
    users: usize,
    /// How long each query holds a connection, in milliseconds (0 to 10000)
    #[arg(long, value_name = "MS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=MAX_QUERY_MS))]
    query_ms: u64,
    /// Connection pool size (1 to 256)
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = between(1, MAX_CONNECTIONS))]
    connections: usize,
    /// Run N server processes over one SQLite file instead, in bursts of
    /// --concurrency requests released together and spread round-robin
    /// over the replicas: without singleflight, with a Group per replica,
    /// and with one Redis group across them (needs `--features redis` and
    /// redis-server on PATH). --requests does not apply (1 to 16)
    #[arg(long, value_name = "N", value_parser = between(1, MAX_REPLICAS))]
    replicas: Option<usize>,
    /// With --replicas: bursts per row (1 to 1000)
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = between(1, MAX_BURSTS))]
    bursts: usize,
    /// Internal: serve as one replica in this mode (direct, group or
    /// redis), over the database in --db, and print the port
    #[arg(long, hide = true, value_name = "MODE")]
    replica_of: Option<String>,
    /// Internal: the replicas' database directory
    #[arg(long, hide = true, value_name = "DIR")]
    db: Option<std::path::PathBuf>,
    /// Internal: the replicas' Redis
    #[arg(long, hide = true, value_name = "URL")]
    redis_url: Option<String>,
}

/// Whole numbers from `min` to `max`, as the `usize` the demo counts in.
fn between(min: u64, max: u64) -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(min..=max)
}

impl Options {
    /// Rejects combinations the program could not honour as `--help`
    /// describes them.
    fn validate(&self) -> Result<(), String> {
        let existing = self.hot_keys - 1;
        if existing > self.users {
            return Err(format!(
                "--hot-keys {} asks for users 1 to {existing}, but --users {} creates only {}; \
                 raise --users or lower --hot-keys",
                self.hot_keys,
                self.users,
                count(self.users, "user"),
            ));
        }
        let per_burst = if self.replicas.is_some() {
            self.concurrency
        } else {
            self.requests
        };
        if self.replicas.is_some() && self.hot_keys > per_burst {
            return Err(format!(
                "--hot-keys {} needs --concurrency {} or more with --replicas, \
                 so that every hot id is asked for in each burst",
                self.hot_keys, self.hot_keys
            ));
        }
        if self.hot_keys > self.requests {
            return Err(format!(
                "--hot-keys {} needs at least {} so that every hot id is asked for \
                 (got --requests {})",
                self.hot_keys,
                count(self.hot_keys, "request"),
                self.requests
            ));
        }
        let slowest = self.slowest_run();
        if slowest > LONGEST_RUN {
            return Err(format!(
                "without singleflight this run would take about {} min ({} ms per query, \
                 {} at a time); the demo refuses runs over {} min: lower --requests (or --bursts) \
                 or --query-ms, or raise --connections",
                slowest.as_secs() / 60,
                self.query_ms,
                self.connections.min(self.concurrency),
                LONGEST_RUN.as_secs() / 60,
            ));
        }
        let needed = limits::open_files_needed(self.concurrency, self.connections);
        let allowed = limits::open_files_allowed();
        if needed > allowed {
            return Err(format!(
                "--concurrency {} with --connections {} needs about {needed} open files, \
                 but this process may open {allowed} (ulimit -n): lower them or raise the limit",
                self.concurrency, self.connections,
            ));
        }
        let threads = limits::threads_needed(self.concurrency);
        if let Err(e) = limits::can_start_threads(threads) {
            return Err(format!(
                "--concurrency {} needs {threads} threads, and this process cannot start \
                 that many ({e}): lower --concurrency or raise the limit",
                self.concurrency,
            ));
        }
        Ok(())
    }

    /// A lower bound on the time the row without singleflight takes: every
    /// request queries, and queries hold one of the pool's connections.
    fn slowest_run(&self) -> Duration {
        let at_once = self.connections.min(self.concurrency) as u64;
        let queries = match self.replicas {
            // Each replica has its own pool; a burst is spread over them.
            Some(replicas) => {
                let per_replica = self.concurrency.div_ceil(replicas) as u64;
                per_replica.div_ceil(at_once) * self.bursts as u64
            }
            None => (self.requests as u64).div_ceil(at_once),
        };
        Duration::from_millis(queries * self.query_ms)
    }

    /// The id that does not exist, when the burst asks for one.
    fn missing_id(&self) -> Option<u64> {
        (self.hot_keys > 1).then_some(self.users as u64 + 1)
    }

    /// The ids a burst asks for, round-robin over the hot ids.
    fn burst_ids(&self) -> Vec<u64> {
        self.ids(self.requests)
    }

    /// `requests` ids, round-robin over the hot ids.
    fn ids(&self, requests: usize) -> Vec<u64> {
        let hot: Vec<u64> = (1..self.hot_keys.max(2) as u64)
            .chain(self.missing_id())
            .collect();
        (0..requests).map(|i| hot[i % hot.len()]).collect()
    }

    fn describe_hot_ids(&self) -> String {
        match (self.hot_keys, self.missing_id()) {
            (_, None) => "1 hot id: user 1".to_string(),
            (2, Some(missing)) => format!("2 hot ids: user 1 and missing id {missing}"),
            (n, Some(missing)) => {
                format!("{n} hot ids: users 1-{} and missing id {missing}", n - 1)
            }
        }
    }
}

struct Run {
    label: &'static str,
    replies: Vec<Reply>,
    queries: u64,
    elapsed: Duration,
    flight_sizes: Vec<usize>,
    left_in_flight: usize,
    /// `GET /metrics` as this run's server answered it after the burst.
    scrape: Option<String>,
}

impl Run {
    /// The one rate the demo reports, in the progress line and the table.
    fn rate(&self) -> f64 {
        self.replies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn summary(&self) -> String {
        format!(
            "{} in {:.2} s, {:.0} req/s",
            count(self.replies.len(), "request"),
            self.elapsed.as_secs_f64(),
            self.rate()
        )
    }
}

/// A progress bar on a terminal, replaced by a summary line when the burst
/// ends; elsewhere only the summary line, so logs get no blank lines or
/// carriage returns. The summary is printed by us, not drawn by indicatif:
/// a drawn bar leaves the cursor at the right margin, which swallows the
/// next newline.
struct Progress {
    bar: Option<ProgressBar>,
    label: &'static str,
}

impl Progress {
    /// A bar counting `len` `units` ("requests", "users").
    fn new(label: &'static str, len: usize, units: &str) -> Progress {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::stdout());
            let template = format!("{{prefix:<20}} [{{bar:40}}] {{pos}}/{{len}} {units}");
            bar.set_style(
                ProgressStyle::with_template(&template)
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(label);
            bar
        });
        Progress { bar, label }
    }

    fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Clears the bar without a summary: for the set-up before a burst.
    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Ends with the run's own measured rate, the one the table shows, not
    /// indicatif's moving estimate.
    fn finish(&self, run: &Run) {
        self.clear();
        println!("{:<20} {}", self.label, run.summary());
    }
}

fn run(
    label: &'static str,
    with_group: bool,
    scrape: bool,
    options: &Options,
) -> Result<Run, String> {
    let dir = scratch::scratch_dir(if with_group { "grouped" } else { "direct" })
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let filling = Progress::new(label, options.users, "users written");
    let db = Database::create(
        dir.path(),
        options.users as u64,
        options.connections,
        Duration::from_millis(options.query_ms),
        &|| filling.inc(),
    )
    .map_err(|e| {
        format!(
            "creating the SQLite database in {}: {e}",
            dir.path().display()
        )
    })?;
    filling.clear();
    let group = with_group.then(|| Arc::new(Group::builder().name("users").build()));
    let app = Arc::new(App::new(db, group.clone()));
    let server = Server::start(app.clone(), options.concurrency)
        .map_err(|e| format!("starting the server: {e}"))?;

    let ids = options.burst_ids();
    let progress = Progress::new(label, ids.len(), "requests");
    server.warm_up(options.concurrency);
    let start = Instant::now();
    let replies = app::burst(&server.base_url(), &ids, options.concurrency, &|| {
        progress.inc()
    });
    let elapsed = start.elapsed();
    let scrape = if scrape {
        let text =
            app::fetch(&server.base_url(), "/metrics").map_err(|e| format!("GET /metrics: {e}"))?;
        Some(text)
    } else {
        None
    };
    server.stop();
    let replies = replies.map_err(|e| format!("starting the client threads: {e}"))?;

    let flight_sizes = std::mem::take(&mut *app.flight_sizes.lock().unwrap());
    let run = Run {
        label,
        queries: app.db.queries(),
        replies,
        elapsed,
        flight_sizes,
        left_in_flight: group.map_or(0, |g| g.in_flight()),
        scrape,
    };
    progress.finish(&run);
    Ok(run)
}

/// Checks every reply against what the database holds.
fn wrong_replies(run: &Run, options: &Options) -> usize {
    run.replies
        .iter()
        .filter(|reply| is_wrong(reply, options))
        .count()
}

fn is_wrong(reply: &Reply, options: &Options) -> bool {
    if Some(reply.id) == options.missing_id() {
        reply.status != 404 || !reply.body.contains("not found")
    } else {
        reply.status != 200 || reply.body != User::expected(reply.id).to_json()
    }
}

fn table_row(run: &Run) -> Vec<String> {
    let mut latencies: Vec<Duration> = run.replies.iter().map(|r| r.latency).collect();
    latencies.sort();
    let not_found = run.replies.iter().filter(|r| r.status == 404).count();
    vec![
        run.label.to_string(),
        run.replies.len().to_string(),
        run.queries.to_string(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().expect("at least one request")),
        format!("{:.0}", run.rate()),
        not_found.to_string(),
    ]
}

fn print_flights(run: &Run) {
    let mut sizes = run.flight_sizes.clone();
    sizes.sort_unstable();
    let (Some(min), Some(max)) = (sizes.first(), sizes.last()) else {
        return;
    };
    let total: usize = sizes.iter().sum();
    println!(
        "\n{}: {} served {}; callers per flight: min {min}, median {}, mean {:.1}, max {max}",
        run.label,
        count(sizes.len(), "flight"),
        count(total, "caller"),
        sizes[sizes.len() / 2],
        total as f64 / sizes.len() as f64,
    );
}

/// The scrape's lines a reader of this demo cares about: request counts by
/// status, queries, p99 latency, and the group's own series when the crate
/// records them.
fn print_metrics(scrape: &str) {
    println!("\nGET /metrics from the last server (Prometheus text), the lines that matter:");
    // Counters, plus the p99 of each summary: the other quantiles, sums
    // and counts are there for a scraper, not for this table.
    let wanted = |line: &str| {
        let summary_p99 = line.contains("quantile=\"0.99\"");
        let counter = line.contains("_total{");
        !line.starts_with('#')
            && (line.starts_with("demo_") || line.starts_with("singleflight_"))
            && (counter || summary_p99)
    };
    let mut lines: Vec<&str> = scrape.lines().filter(|line| wanted(line)).collect();
    lines.sort_unstable();
    for line in lines {
        println!("  {line}");
    }
    if !scrape.contains("\nsingleflight_") {
        println!(
            "  (the group's own singleflight_* series appear when the crate is built with --features metrics)"
        );
    }
}

fn main() -> ExitCode {
    let options = Options::parse();
    #[cfg(feature = "redis")]
    if let Some(mode) = &options.replica_of {
        return replicas::serve(mode, &options);
    }
    if let Err(message) = options.validate() {
        Options::command()
            .error(ErrorKind::ArgumentConflict, message)
            .exit();
    }
    if let Some(replicas) = options.replicas {
        #[cfg(feature = "redis")]
        return replicas::run(replicas, &options);
        #[cfg(not(feature = "redis"))]
        {
            eprintln!(
                "thundering_herd: --replicas {replicas} needs the Redis group: add --features redis, as in \
                 `cargo run --release --features redis --example thundering_herd -- --replicas {replicas}`"
            );
            return ExitCode::from(2);
        }
    }
    if let Err(message) = scratch::remove_on_interrupt("thundering_herd") {
        eprintln!("thundering_herd: {message}");
        return ExitCode::FAILURE;
    }
    // Before any group exists, so a group that records metrics records here.
    app::prometheus();
    println!(
        "{} in SQLite, {}, {} ms per query; {} per burst from {} over {}\n",
        count(options.users, "user"),
        count(options.connections, "connection"),
        options.query_ms,
        count(options.requests, "request"),
        count(options.concurrency, "client"),
        options.describe_hot_ids(),
    );
    let runs = [("without singleflight", false), ("with Group::work", true)]
        .into_iter()
        .map(|(label, with_group)| run(label, with_group, with_group, &options))
        .collect::<Result<Vec<_>, _>>();
    let runs = match runs {
        Ok(runs) => runs,
        Err(message) => {
            scratch::defer_to_interrupt();
            eprintln!("thundering_herd: {message}");
            return ExitCode::FAILURE;
        }
    };

    println!();
    print_table(
        1,
        &[
            "",
            "requests",
            "SQLite queries",
            "p50",
            "p99",
            "max",
            "req/s",
            "404s",
        ],
        &runs.iter().map(table_row).collect::<Vec<_>>(),
    );
    scratch::defer_to_interrupt();
    let mut failed = false;
    for run in &runs {
        let wrong = wrong_replies(run, &options);
        if wrong > 0 || run.left_in_flight > 0 {
            eprintln!(
                "{}: wrong replies: {wrong}, left in flight: {}",
                run.label, run.left_in_flight
            );
            failed = true;
        }
    }
    print_flights(&runs[1]);
    if let Some(scrape) = runs.iter().find_map(|run| run.scrape.as_deref()) {
        print_metrics(scrape);
    }
    println!(
        "\nevery body checked against the database: {}",
        if failed {
            "MISMATCHES (see above)"
        } else {
            "all correct"
        }
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
