//! `--replicas N`: the same server as N processes over one SQLite file, as a
//! fleet behind a load balancer runs it. A `Group` per replica still lets
//! each hot key reach the database once per replica per burst; a
//! `RedisGroup` shared by the fleet brings that down to about once.
//!
//! The replicas are this binary re-executed with `--replica-of MODE`; each
//! prints its URL, serves until its stdin closes, and reports the queries
//! that reached SQLite on `GET /queries`, which the parent adds up.

use std::process::ExitCode;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use sync_singleflight::Group;
use sync_singleflight::redis::{RedisConfig, RedisGroup};

use crate::app::{self, App, Database, Reply, Server};
use crate::fleet::{self, RedisServer, Replica};
use crate::table::{count, ms, percentile, print_table};
use crate::{Options, is_wrong};

const ROWS: [(&str, &str); 3] = [
    ("without singleflight", "direct"),
    ("Group per replica", "group"),
    ("Redis group across replicas", "redis"),
];

/// In a replica: serve `mode` until the parent closes our stdin.
pub fn serve(mode: &str, options: &Options) -> ExitCode {
    match start(mode, options) {
        // Kept alive until the process exits.
        Ok(_server) => fleet::exit_when_stdin_closes(),
        Err(message) => {
            eprintln!("thundering_herd replica ({mode}): {message}");
            ExitCode::FAILURE
        }
    }
}

fn start(mode: &str, options: &Options) -> Result<Server, String> {
    let dir = options.db.as_deref().ok_or("--db is missing")?;
    let delay = Duration::from_millis(options.query_ms);
    let db = Database::open(dir, options.connections, delay)
        .map_err(|e| format!("opening the shared SQLite file: {e}"))?;
    let app = match mode {
        "direct" => App::new(db, None),
        "group" => App::new(db, Some(Arc::new(Group::builder().name("users").build()))),
        "redis" => {
            let url = options
                .redis_url
                .as_deref()
                .ok_or("--redis-url is missing")?;
            let group = RedisGroup::open(url, RedisConfig::new("users", 1))
                .map_err(|e| format!("opening the Redis group: {e}"))?;
            // Loads the scripts and pools a connection before the first
            // burst, so the first burst is not the one paying for them.
            group.work(&0, || app::Shared::NotFound(0));
            App::with_redis(db, group)
        }
        _ => return Err(format!("unknown mode {mode:?}")),
    };
    let server = Server::start(Arc::new(app), options.concurrency)
        .map_err(|e| format!("starting the server: {e}"))?;
    server.warm_up(options.concurrency);
    println!("{}", server.base_url());
    Ok(server)
}

struct Row {
    label: &'static str,
    replies: Vec<Reply>,
    queries: u64,
    elapsed: Duration,
}

/// In the parent: one row per mode, each from a fresh fleet.
pub fn run(replicas: usize, options: &Options) -> ExitCode {
    let redis = match RedisServer::start() {
        Ok(redis) => redis,
        Err(message) => {
            eprintln!("thundering_herd: {message}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} over one SQLite file of {}, {} and {} ms per query each; \
         {} of {} requests released together, from {} over {}, \
         spread round-robin over the replicas; redis-server at {}\n",
        count(replicas, "replica"),
        count(options.users, "user"),
        count(options.connections, "connection"),
        options.query_ms,
        count(options.bursts, "burst"),
        options.concurrency,
        count(options.concurrency, "client"),
        options.describe_hot_ids(),
        redis.url(),
    );
    let rows = crate::scratch::scratch_dir("replicas")
        .map_err(|e| format!("cannot create a temporary directory: {e}"))
        .and_then(|dir| {
            Database::create(dir.path(), options.users as u64, 1, Duration::ZERO, &|| {})
                .map_err(|e| format!("creating the SQLite database: {e}"))?;
            ROWS.iter()
                .map(|&(label, mode)| row(label, mode, replicas, dir.path(), &redis, options))
                .collect::<Result<Vec<_>, _>>()
        });
    let rows = match rows {
        Ok(rows) => rows,
        Err(message) => {
            eprintln!("thundering_herd: {message}");
            return ExitCode::FAILURE;
        }
    };

    let hot_keys = options.hot_keys.max(2);
    println!();
    print_table(
        1,
        &[
            "",
            "requests",
            "SQLite queries",
            "queries per hot key per burst",
            "p50",
            "p99",
        ],
        &rows
            .iter()
            .map(|row| {
                let mut latencies: Vec<Duration> = row.replies.iter().map(|r| r.latency).collect();
                latencies.sort();
                vec![
                    row.label.to_string(),
                    row.replies.len().to_string(),
                    row.queries.to_string(),
                    format!(
                        "{:.2}",
                        row.queries as f64 / (hot_keys * options.bursts) as f64
                    ),
                    ms(percentile(&latencies, 0.5)),
                    ms(percentile(&latencies, 0.99)),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let wrong: usize = rows
        .iter()
        .map(|row| row.replies.iter().filter(|r| is_wrong(r, options)).count())
        .sum();
    println!(
        "\nevery body checked against the database: {}",
        if wrong == 0 {
            "all correct".to_string()
        } else {
            format!("{wrong} MISMATCHES")
        }
    );
    if wrong == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn row(
    label: &'static str,
    mode: &str,
    replicas: usize,
    dir: &std::path::Path,
    redis: &RedisServer,
    options: &Options,
) -> Result<Row, String> {
    let args: Vec<String> = [
        "--replica-of",
        mode,
        "--db",
        &dir.display().to_string(),
        "--redis-url",
        &redis.url(),
        "--concurrency",
        &options.concurrency.to_string(),
        "--connections",
        &options.connections.to_string(),
        "--query-ms",
        &options.query_ms.to_string(),
    ]
    .map(String::from)
    .to_vec();
    // Dropped at the end of the row, which kills them.
    let mut fleet = (0..replicas)
        .map(|_| Replica::spawn(&args))
        .collect::<Result<Vec<_>, _>>()?;
    let urls = fleet
        .iter_mut()
        .map(Replica::line)
        .collect::<Result<Vec<_>, _>>()?;

    let start = Instant::now();
    let replies = bursts(&urls, options);
    let elapsed = start.elapsed();
    let mut queries = 0;
    for url in &urls {
        let text = app::fetch(url, "/queries").map_err(|e| format!("GET /queries: {e}"))?;
        queries += text
            .trim()
            .parse::<u64>()
            .map_err(|e| format!("GET /queries answered {text:?}: {e}"))?;
    }
    let row = Row {
        label,
        replies,
        queries,
        elapsed,
    };
    println!(
        "{:<28} {} in {:.2} s",
        row.label,
        count(row.replies.len(), "request"),
        row.elapsed.as_secs_f64()
    );
    Ok(row)
}

/// `--bursts` times: every client sends one request at once, the `i`-th
/// to the replica `fleet::replica_for` picks. Each client keeps its agent
/// (and so its connections) across bursts, as a load balancer would.
fn bursts(urls: &[String], options: &Options) -> Vec<Reply> {
    let ids = options.ids(options.concurrency);
    let hot_keys = options.hot_keys.max(2);
    let start = Barrier::new(ids.len() + 1);
    let done = Barrier::new(ids.len() + 1);
    let replies = Mutex::new(Vec::with_capacity(ids.len() * options.bursts));
    thread::scope(|s| {
        for (i, &id) in ids.iter().enumerate() {
            let (start, done, replies) = (&start, &done, &replies);
            s.spawn(move || {
                let agent = app::client();
                for burst in 0..options.bursts {
                    let url = &urls[fleet::replica_for(i, hot_keys, urls.len(), burst)];
                    start.wait();
                    let reply = app::get_user(&agent, url, id);
                    replies.lock().unwrap().push(reply);
                    done.wait();
                }
            });
        }
        for _ in 0..options.bursts {
            start.wait();
            done.wait();
        }
    });
    replies.into_inner().unwrap()
}
