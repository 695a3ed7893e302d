//! `--replicas N`: each burst spread over N proxy processes that share one
//! SQLite file. A `Group` per replica still lets every replica verify and
//! write its own session for the token; a `RedisGroup` across them leaves
//! one verification and one session per token for the whole fleet.
//!
//! The replicas are this binary re-executed with `--replica-of MODE` and
//! their share of the callers. Each starts its threads, says `ready`, and
//! lets them go together when the parent writes `go` to every replica, then
//! prints one line per call and its verification count.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use sync_singleflight::Group;
use sync_singleflight::redis::{RedisConfig, RedisGroup};

use crate::fleet::{self, RedisServer, Replica};
use crate::sessions::{AuthError, Call, Figures, Proxy, Session, SessionResult, Store};
use crate::table::{count, print_table};
use crate::{EXPIRED, HEADER, Options, row};

const PATHS: [(&str, &str); 3] = [
    ("handler directly", "direct"),
    ("Group per replica", "group"),
    ("Redis group across replicas", "redis"),
];

/// A session or an error as it crosses processes: typed where the type
/// means something to every replica, text otherwise.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
enum Shared {
    Session(Session),
    UnknownToken,
    Expired,
    Failed(String),
}

impl From<SessionResult> for Shared {
    fn from(result: SessionResult) -> Shared {
        match result {
            Ok(session) => Shared::Session(session),
            Err(error) => match *error {
                AuthError::UnknownToken => Shared::UnknownToken,
                AuthError::Expired => Shared::Expired,
                _ => Shared::Failed(error.to_string()),
            },
        }
    }
}

impl From<Shared> for SessionResult {
    fn from(shared: Shared) -> SessionResult {
        match shared {
            Shared::Session(session) => Ok(session),
            Shared::UnknownToken => Err(Arc::new(AuthError::UnknownToken)),
            Shared::Expired => Err(Arc::new(AuthError::Expired)),
            Shared::Failed(message) => Err(Arc::new(AuthError::Replica(message))),
        }
    }
}

/// In a replica: one burst of `--callers`, released by the parent.
pub fn serve(mode: &str, options: &Options) -> ExitCode {
    if let Err(message) = serve_burst(mode, options) {
        eprintln!("session_storm replica ({mode}): {message}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn serve_burst(mode: &str, options: &Options) -> Result<(), String> {
    let file = options.store.as_deref().ok_or("--store is missing")?;
    let proxy = Proxy {
        store: Store::open_file(file).map_err(|e| format!("opening the shared store: {e}"))?,
        provider: crate::provider(options),
        group: matches!(mode, "group" | "redis").then(|| Arc::new(Group::new())),
    };
    let redis = match mode {
        "redis" => {
            let url = options
                .redis_url
                .as_deref()
                .ok_or("--redis-url is missing")?;
            let group: RedisGroup<String, Shared> =
                RedisGroup::open(url, RedisConfig::new("sessions", 1))
                    .map_err(|e| format!("opening the Redis group: {e}"))?;
            // Loads the scripts and pools a connection before the burst.
            group.work("warm-up", || Shared::UnknownToken);
            Some(group)
        }
        "direct" | "group" => None,
        _ => return Err(format!("unknown mode {mode:?}")),
    };
    // With Redis, the proxy's own group stays in front: the Redis group
    // hands each caller a clone of the `Shared` value, and the local flight
    // turns it into one `Arc` that the process's callers share.
    let get_or_create = |token: &str| match (&redis, &proxy.group) {
        (Some(redis), Some(local)) => local.work(token, || {
            redis
                .work(token, || Shared::from(proxy.handle(token)))
                .into()
        }),
        _ => proxy.get_or_create(token),
    };

    let go = Barrier::new(options.callers.len() + 1);
    let calls: Vec<Call> = thread::scope(|s| {
        let handles: Vec<_> = options
            .callers
            .iter()
            .map(|token| {
                let (go, get_or_create) = (&go, &get_or_create);
                s.spawn(move || {
                    go.wait();
                    let began = Instant::now();
                    let result = get_or_create(token);
                    Call {
                        token: token.clone(),
                        result,
                        latency: began.elapsed(),
                    }
                })
            })
            .collect();
        println!("ready");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        go.wait();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // An error's Arc address names its instance, so the parent can tell
    // errors shared within this process from separate ones.
    for call in &calls {
        let micros = call.latency.as_micros();
        match &call.result {
            Ok(session) => println!(
                "{}\tok\t{}\t{}\t{micros}",
                call.token, session.id, session.user
            ),
            Err(error) => println!(
                "{}\terr\t{:p}\t{error}\t{micros}",
                call.token,
                Arc::as_ptr(error)
            ),
        }
    }
    println!("verifications\t{}", proxy.provider.verifications());
    Ok(())
}

/// In the parent: every burst through every path, each on a fresh store
/// and a fresh fleet.
pub fn run(replicas: usize, options: &Options, bursts: &[(String, Vec<String>)]) -> ExitCode {
    if let Err(message) = crate::scratch::remove_on_interrupt("session_storm") {
        eprintln!("session_storm: {message}");
        return ExitCode::FAILURE;
    }
    let redis = match RedisServer::start() {
        Ok(redis) => redis,
        Err(message) => {
            eprintln!("session_storm: {message}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "{} per burst over {} sharing one SQLite file, released together; \
         the provider takes {} ms per verification; redis-server at {}\n",
        count(options.threads.into(), "thread"),
        count(replicas, "replica"),
        options.verify_ms,
        redis.url()
    );
    let mut rows = Vec::new();
    let mut kept_promise = true;
    for (burst, tokens) in bursts {
        for (path, mode) in PATHS {
            let figures = match fleet_burst(mode, replicas, tokens, &redis, options) {
                Ok(figures) => figures,
                Err(message) => {
                    eprintln!("session_storm: {message}");
                    return ExitCode::FAILURE;
                }
            };
            if mode == "redis" {
                kept_promise &= one_per_token(&figures, tokens);
            }
            rows.push(row(burst, path, &figures));
        }
    }
    print_table(2, &HEADER, &rows);
    println!(
        "\nerrors are shared within a process; across processes each gets its own copy.\n\
         with the Redis group, one verification, one session and one id per token \
         across the fleet in every burst: {}",
        if kept_promise { "yes" } else { "NO" }
    );
    if kept_promise {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn one_per_token(f: &Figures, tokens: &[String]) -> bool {
    let valid = tokens.iter().filter(|t| *t != EXPIRED).count();
    f.verifications == tokens.len() as u64
        && f.sessions_written == valid as u64
        && f.ids_per_token.len() == valid
        && f.ids_per_token.values().all(|&ids| ids == 1)
}

fn fleet_burst(
    mode: &str,
    replicas: usize,
    tokens: &[String],
    redis: &RedisServer,
    options: &Options,
) -> Result<Figures, String> {
    // A folder of its own per burst (tempfile), so two runs started at the same
    // moment never share a store; it goes on return and on Ctrl-C.
    let scratch = crate::scratch::scratch_dir("sessions")
        .map_err(|e| format!("creating a scratch folder: {e}"))?;
    let file = scratch.path().join(format!("{mode}.db"));
    let store = Store::create_file(&file).map_err(|e| format!("creating the store: {e}"))?;
    let result = fleet_calls(mode, replicas, tokens, &file, redis, options);
    let written = store.written();
    drop(store);
    let (verifications, calls) = result?;
    Ok(Figures::from_calls(verifications, written, &calls))
}

fn fleet_calls(
    mode: &str,
    replicas: usize,
    tokens: &[String],
    file: &std::path::Path,
    redis: &RedisServer,
    options: &Options,
) -> Result<(u64, Vec<Call>), String> {
    let mut shares = vec![Vec::new(); replicas];
    for i in 0..options.threads as usize {
        let token = &tokens[i % tokens.len()];
        shares[fleet::replica_for(i, tokens.len(), replicas, 0)].push(token.as_str());
    }
    let mut fleet = Vec::new();
    for share in shares.iter().filter(|share| !share.is_empty()) {
        let args = [
            "--replica-of",
            mode,
            "--store",
            &file.display().to_string(),
            "--redis-url",
            &redis.url(),
            "--verify-ms",
            &options.verify_ms.to_string(),
            "--tokens",
            &options.tokens.to_string(),
            "--callers",
            &share.join(","),
        ]
        .map(String::from);
        fleet.push(Replica::spawn(&args)?);
    }
    for replica in &mut fleet {
        let line = replica.line()?;
        if line != "ready" {
            return Err(format!("a replica said {line:?} instead of ready"));
        }
    }
    for replica in &mut fleet {
        replica.send("go")?;
    }
    let (mut verifications, mut calls) = (0, Vec::new());
    for (n, replica) in fleet.iter_mut().enumerate() {
        // One Arc per error instance of each replica.
        let mut errors: HashMap<String, Arc<AuthError>> = HashMap::new();
        loop {
            let line = replica.line()?;
            let fields: Vec<&str> = line.split('\t').collect();
            match fields[..] {
                ["verifications", n] => {
                    verifications += n.parse::<u64>().map_err(|e| format!("{line:?}: {e}"))?;
                    break;
                }
                [token, kind, a, b, micros] => {
                    let result = if kind == "ok" {
                        Ok(Session {
                            id: a.to_string(),
                            user: b.to_string(),
                        })
                    } else {
                        let error = errors
                            .entry(format!("{n}/{a}"))
                            .or_insert_with(|| Arc::new(AuthError::Replica(b.to_string())));
                        Err(error.clone())
                    };
                    calls.push(Call {
                        token: token.to_string(),
                        result,
                        latency: Duration::from_micros(
                            micros.parse().map_err(|e| format!("{line:?}: {e}"))?,
                        ),
                    });
                }
                _ => return Err(format!("a replica printed {line:?}")),
            }
        }
    }
    Ok((verifications, calls))
}
