//! The crate's main job, end to end: a threaded HTTP server over embedded
//! SQLite, hit by a burst of concurrent requests for a few hot users, once
//! with the lookup called directly and once through `Group::work`.
//!
//! ```sh
//! cargo run --release --example thundering_herd
//! cargo run --release --example thundering_herd -- --help
//! ```
//!
//! Everything stays on 127.0.0.1 and the demo stops by itself.

mod app;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::{App, Database, Reply, Server, TempDir, User};
use indicatif::{ProgressBar, ProgressStyle};
use sync_singleflight::Group;

struct Options {
    requests: usize,
    concurrency: usize,
    hot_keys: u64,
    users: u64,
    query_ms: u64,
    connections: usize,
}

const HELP: &str = "\
thundering_herd: a burst of HTTP requests for a few hot users, over embedded
SQLite, with and without sync-singleflight in front of the lookup.

USAGE:
    cargo run --release --example thundering_herd -- [OPTIONS]

OPTIONS:
    --requests N      requests per burst                    [default: 1000]
    --concurrency N   concurrent clients (and server threads) [default: 64]
    --hot-keys N      distinct ids the burst asks for; the last one does
                      not exist, to show shared 404s         [default: 8]
    --users N         rows in the users table                [default: 5000]
    --query-ms N      how long each query holds a connection [default: 20]
    --connections N   connection pool size                   [default: 4]
    -h, --help        this text";

fn parse() -> Result<Options, String> {
    let mut options = Options {
        requests: 1000,
        concurrency: 64,
        hot_keys: 8,
        users: 5000,
        query_ms: 20,
        connections: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{HELP}");
            std::process::exit(0);
        }
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{flag}: expected a whole number, got {value:?}"))?;
        if number == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
        match flag.as_str() {
            "--requests" => options.requests = number as usize,
            "--concurrency" => options.concurrency = number as usize,
            "--hot-keys" => options.hot_keys = number,
            "--users" => options.users = number,
            "--query-ms" => options.query_ms = number,
            "--connections" => options.connections = number as usize,
            _ => return Err(format!("unknown option {flag}; see --help")),
        }
    }
    Ok(options)
}

/// The ids a burst asks for: hot ids 1..k-1 and, when k > 1, one id past the
/// last row, so the shared-error path shows up as 404s.
fn burst_ids(options: &Options) -> Vec<u64> {
    let hot: Vec<u64> = (1..options.hot_keys)
        .chain([if options.hot_keys > 1 {
            options.users + 1
        } else {
            1
        }])
        .collect();
    (0..options.requests).map(|i| hot[i % hot.len()]).collect()
}

struct Run {
    label: &'static str,
    replies: Vec<Reply>,
    queries: u64,
    elapsed: Duration,
    flight_sizes: Vec<usize>,
    left_in_flight: usize,
}

fn run(label: &'static str, with_group: bool, options: &Options) -> Result<Run, String> {
    let dir = TempDir::new(if with_group { "grouped" } else { "direct" })
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let db = Database::create(
        dir.path(),
        options.users,
        options.connections,
        Duration::from_millis(options.query_ms),
    )
    .map_err(|e| format!("creating the SQLite database: {e}"))?;
    let group = with_group.then(|| Arc::new(Group::new()));
    let app = Arc::new(App::new(db, group.clone()));
    let server = Server::start(app.clone(), options.concurrency)
        .map_err(|e| format!("starting the server: {e}"))?;

    let ids = burst_ids(options);
    let bar = ProgressBar::new(ids.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>22} [{bar:40}] {pos}/{len} requests {per_sec}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label);
    server.warm_up(options.concurrency);
    let start = Instant::now();
    let replies = app::burst(&server.base_url(), &ids, options.concurrency, &|| {
        bar.inc(1)
    });
    let elapsed = start.elapsed();
    bar.finish();
    server.stop();

    let flight_sizes = std::mem::take(&mut *app.flight_sizes.lock().unwrap());
    Ok(Run {
        label,
        queries: app.db.queries(),
        replies,
        elapsed,
        flight_sizes,
        left_in_flight: group.map_or(0, |g| g.in_flight()),
    })
}

/// Checks every reply against what the database holds.
fn wrong_replies(run: &Run, options: &Options) -> usize {
    run.replies
        .iter()
        .filter(|reply| {
            if reply.id <= options.users {
                reply.status != 200 || reply.body != User::expected(reply.id).to_json()
            } else {
                reply.status != 404 || !reply.body.contains("not found")
            }
        })
        .count()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() -> ExitCode {
    let options = match parse() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("thundering_herd: {message}");
            return ExitCode::from(2);
        }
    };
    println!(
        "{} users in SQLite, {} connections, {} ms per query; burst of {} requests from {} clients over {} hot ids\n",
        options.users,
        options.connections,
        options.query_ms,
        options.requests,
        options.concurrency,
        options.hot_keys
    );
    let runs = [("without singleflight", false), ("with Group::work", true)]
        .into_iter()
        .map(|(label, with_group)| run(label, with_group, &options))
        .collect::<Result<Vec<_>, _>>();
    let runs = match runs {
        Ok(runs) => runs,
        Err(message) => {
            eprintln!("thundering_herd: {message}");
            return ExitCode::FAILURE;
        }
    };

    println!();
    println!(
        "| {:<20} | {:>8} | {:>14} | {:>9} | {:>9} | {:>9} | {:>9} | {:>5} |",
        "", "requests", "SQLite queries", "p50", "p99", "max", "req/s", "404s"
    );
    println!(
        "|{:-<22}|{:->10}|{:->16}|{:->11}|{:->11}|{:->11}|{:->11}|{:->7}|",
        "", "", "", "", "", "", "", ""
    );
    let mut failed = false;
    for run in &runs {
        let mut latencies: Vec<Duration> = run.replies.iter().map(|r| r.latency).collect();
        latencies.sort();
        let not_found = run.replies.iter().filter(|r| r.status == 404).count();
        println!(
            "| {:<20} | {:>8} | {:>14} | {:>9} | {:>9} | {:>9} | {:>9.0} | {:>5} |",
            run.label,
            run.replies.len(),
            run.queries,
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().expect("at least one request")),
            run.replies.len() as f64 / run.elapsed.as_secs_f64(),
            not_found,
        );
        let wrong = wrong_replies(run, &options);
        if wrong > 0 || run.left_in_flight > 0 {
            eprintln!(
                "{}: {wrong} wrong replies, {} left in flight",
                run.label, run.left_in_flight
            );
            failed = true;
        }
    }
    let grouped = &runs[1];
    let mut sizes = grouped.flight_sizes.clone();
    sizes.sort_unstable();
    if let (Some(min), Some(max)) = (sizes.first(), sizes.last()) {
        let total: usize = sizes.iter().sum();
        println!(
            "\nwith Group::work: {} flights served {} callers; callers per flight: min {min}, median {}, mean {:.1}, max {max}",
            sizes.len(),
            total,
            sizes[sizes.len() / 2],
            total as f64 / sizes.len() as f64,
        );
    }
    println!(
        "every body checked against the database: {}",
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
