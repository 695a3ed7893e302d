//! `--replicas N` also runs the case a lease cannot cover: a leader paused
//! past its lease. Replica A leads the login's flight and is SIGSTOPped
//! inside the verification until its lease has expired in Redis; replica B
//! then leads the same login and writes a session; A is resumed (SIGCONT)
//! and writes too. Without a fencing token the store ends with two
//! sessions for one login. With `work_fenced`, each flight's write carries
//! its token and the store refuses the stale one: one session survives and
//! every caller of both replicas gets it.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sync_singleflight::Group;
use sync_singleflight::redis::{RedisConfig, RedisGroup};

use crate::Options;
use crate::fleet::RedisServer;
use crate::replicas::{Shared, print_calls, read_calls, released_calls, replica_args, spawn_ready};
use crate::sessions::{Figures, Proxy, Store};

/// The paused replica's lease: short, so the demo waits little for it.
pub const LEASE: Duration = Duration::from_millis(300);
/// The login both replicas' callers ask a session for.
const LOGIN: &str = "tok-user1";

/// The two runs: the mode a replica is started in, and the row's path.
pub const RUNS: [(&str, &str); 2] = [
    ("paused-plain", "Redis group, no fencing token"),
    ("paused-fenced", "Redis group + fencing token"),
];

fn namespace(mode: &str) -> String {
    format!("sessions-{mode}")
}

/// In a replica of a paused run: like any replica, but through
/// `work_fenced`; its first verification waits until the replica's other
/// callers joined the flight, and with `--pause` then says `inside` and
/// waits for a `resume` line (the parent stops it meanwhile).
pub fn serve(mode: &str, options: &Options) -> ExitCode {
    if let Err(message) = serve_paused(mode, options) {
        eprintln!("session_storm replica ({mode}): {message}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn serve_paused(mode: &str, options: &Options) -> Result<(), String> {
    let fenced = mode == "paused-fenced";
    let file = options.store.as_deref().ok_or("--store is missing")?;
    let url = options
        .redis_url
        .as_deref()
        .ok_or("--redis-url is missing")?;
    let mut provider = crate::provider(options);
    let local = Arc::new(Group::new());
    let gate_shut = AtomicBool::new(false);
    let (group, others, pause) = (
        Arc::clone(&local),
        options.callers.len() as u64 - 1,
        options.pause,
    );
    provider = provider.with_gate(Box::new(move || {
        if gate_shut.swap(true, Ordering::SeqCst) {
            return;
        }
        // Every other caller of this replica joins the flight before the
        // verification goes on: on a loaded machine a caller still on its
        // way would arrive after the flight ended (or, in the paused
        // replica, be frozen before it joined) and lead a second flight,
        // writing a second session that is no stale duplicate. Bounded: a
        // slow start only weakens the demo, it must not hang it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while group.stats().followers_joined < others && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if pause {
            println!("inside");
            let _ = std::io::stdout().flush();
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
    }));
    let proxy = Proxy {
        store: Store::open_file(file).map_err(|e| format!("opening the shared store: {e}"))?,
        provider,
        group: Some(Arc::clone(&local)),
    };
    let mut config = RedisConfig::new(namespace(mode), 1);
    config.lease = LEASE;
    let redis: RedisGroup<String, Shared> =
        RedisGroup::open(url, config).map_err(|e| format!("opening the Redis group: {e}"))?;
    redis.work("warm-up", || Shared::UnknownToken);
    let get_or_create = |token: &str| {
        local.work(token, || {
            redis
                .work_fenced(token, |lease| {
                    let fence = lease.fencing_token().filter(|_| fenced);
                    Shared::from(proxy.handle_fenced(token, fence))
                })
                .into()
        })
    };
    let calls = released_calls(&options.callers, &get_or_create);
    print_calls(&calls, proxy.provider.verifications());
    Ok(())
}

/// In the parent: one paused run in `mode` on a fresh store.
pub fn run(mode: &str, redis: &RedisServer, options: &Options) -> Result<Figures, String> {
    let scratch = crate::scratch::scratch_dir("paused")
        .map_err(|e| format!("creating a scratch folder: {e}"))?;
    let file = scratch.path().join(format!("{mode}.db"));
    let store = Store::create_file(&file).map_err(|e| format!("creating the store: {e}"))?;
    let half = (usize::from(options.threads) / 2).max(1);
    let callers = vec![LOGIN; half].join(",");
    let plain = replica_args(mode, &file, redis, options, &callers);
    let mut pausing = plain.clone();
    pausing.push("--pause".into());
    let mut a = spawn_ready(&pausing)?;
    let mut b = spawn_ready(&plain)?;
    a.send("go")?;
    let line = a.line()?;
    if line != "inside" {
        return Err(format!(
            "the paused replica said {line:?} instead of inside"
        ));
    }
    a.signal("-STOP")?;
    // A's renewals stop with it: wait until Redis has let its lease go.
    let lease_key = format!("sf:{}:v1:{{k:{LOGIN}}}:lease", namespace(mode));
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.exists(&lease_key) != Some(false) {
        if Instant::now() > deadline {
            let _ = a.signal("-CONT");
            return Err("the paused leader's lease did not expire within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    b.send("go")?;
    let (from_b, mut calls) = read_calls(&mut b, 1)?;
    a.send("resume")?;
    a.signal("-CONT")?;
    let (from_a, mut from_a_calls) = read_calls(&mut a, 0)?;
    calls.append(&mut from_a_calls);
    let written = store.written();
    Ok(Figures::from_calls(from_a + from_b, written, &calls))
}
