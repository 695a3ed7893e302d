//! Test fixture: a real `redis-server` child process on 127.0.0.1 at a free
//! port, persistence off, owned by the test so it can be killed for outage
//! tests; plus re-exec helpers for multi-process tests and bounded waits.
//!
//! Uses only std and the `redis` crate (no `sync_singleflight` items), so
//! the library's unit tests can include it too, and a demo can copy it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// A `redis-server` child. Killed on drop.
pub struct RedisServer {
    child: Mutex<Option<Child>>,
    port: u16,
    /// The `default` user's password, when the server requires one.
    password: Option<String>,
    /// Extra `redis-server` arguments, kept for a restart.
    args: Vec<String>,
    /// Its working directory: a replica's full sync writes `dump.rdb`
    /// there, which must not land in (and be loaded from) the crate root.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port; panics with install instructions
    /// when `redis-server` is not on PATH.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server on a free port with extra arguments
    /// (`["--timeout", "1"]`, `["--maxclients", "40"]`, TLS ports and
    /// certificates, replication); the fixture talks to the plain port.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_on_with(free_port(), args)
    }

    /// Starts a server on `port` (used to restart after [`kill`](Self::kill)).
    pub fn start_on(port: u16) -> Self {
        Self::start_on_with(port, &[])
    }

    /// Starts a server on `port` with extra arguments.
    pub fn start_on_with(port: u16, args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Self::spawn(port, None, args)
    }

    /// Starts a server on a free port whose `default` user needs `password`
    /// (`--requirepass`); [`url`](Self::url) and the fixture's own
    /// connections carry it.
    pub fn start_with_password(password: &str) -> Self {
        Self::spawn(free_port(), Some(password.to_string()), Vec::new())
    }

    fn spawn(port: u16, password: Option<String>, args: Vec<String>) -> Self {
        let dir = tempfile::tempdir().expect("no temporary directory");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--dir").arg(dir.path());
        if let Some(password) = &password {
            cmd.args(["--requirepass", password]);
        }
        let child = cmd
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}); these tests need a real server: \
                     `apt-get install -y redis-server` (Debian/Ubuntu) or put it on PATH"
                )
            });
        let server = RedisServer {
            child: Mutex::new(Some(child)),
            port,
            password,
            args,
            _dir: dir,
        };
        wait_until("redis-server answers PING", Duration::from_secs(10), || {
            let mut child = server.child.lock().unwrap();
            if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited at once with {status} (port {port} taken?)");
            }
            drop(child);
            let Some(mut con) = server.try_connection() else {
                return false;
            };
            // Another process's server on the same port (a race with a
            // concurrent test run) would answer too: make sure it is ours.
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query(&mut con)
                .unwrap_or_default();
            let pid = format!("process_id:{}", server.pid());
            assert!(
                info.lines().any(|l| l.trim() == pid),
                "port {port} is answered by another redis-server, not ours"
            );
            true
        });
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `default` user (with its password, if any).
    pub fn url(&self) -> String {
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The URL of another user (an ACL user, or a wrong password).
    pub fn url_as(&self, user: &str, password: &str) -> String {
        format!("redis://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// The child's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .unwrap()
            .as_ref()
            .expect("the server is running")
            .id()
    }

    fn try_connection(&self) -> Option<redis::Connection> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut con = client
            .get_connection_with_timeout(Duration::from_millis(200))
            .ok()?;
        redis::cmd("PING").query::<String>(&mut con).ok()?;
        Some(con)
    }

    /// A plain connection, for planting data and reading INFO.
    pub fn connection(&self) -> redis::Connection {
        let con = self
            .try_connection()
            .expect("redis-server is not answering");
        con.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        con
    }

    /// SIGSTOPs (`true`) or SIGCONTs (`false`) the server: a hung server
    /// that still accepts connections but never answers.
    pub fn pause(&self, stop: bool) {
        let child = self.child.lock().unwrap();
        let pid = child.as_ref().expect("the server is running").id();
        signal_pid(pid, if stop { "-STOP" } else { "-CONT" });
    }

    /// SIGKILLs the server and waits for it to be gone.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs the server, starts it again on the same port with the same
    /// arguments, and returns once it answers PING.
    pub fn restart(&self) {
        self.kill();
        let fresh = Self::spawn(self.port, self.password.clone(), self.args.clone());
        *self.child.lock().unwrap() = fresh.child.lock().unwrap().take();
    }

    /// `CLIENT KILL TYPE normal SKIPME yes`: every client connection but
    /// the one asking is closed by the server. Returns how many.
    pub fn kill_clients(&self) -> u64 {
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .arg("SKIPME")
            .arg("yes")
            .query(&mut self.connection())
            .unwrap()
    }

    /// Connected clients right now (`INFO clients`), the asking one included.
    pub fn connected_clients(&self) -> u64 {
        self.info_field("clients", "connected_clients")
    }

    fn info_field(&self, section: &str, field: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg(section)
            .query(&mut self.connection())
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in INFO {section}"))
    }

    /// Cumulative calls per command (`INFO commandstats`), `info` excluded.
    pub fn command_counts(&self) -> BTreeMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.connection())
            .unwrap();
        let mut counts = BTreeMap::new();
        for line in info.lines() {
            // cmdstat_evalsha:calls=12,usec=...
            let Some(rest) = line.strip_prefix("cmdstat_") else {
                continue;
            };
            let (name, stats) = rest.split_once(':').unwrap();
            let calls = stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
                .unwrap();
            if !matches!(name, "info" | "ping" | "hello" | "client|setinfo") {
                counts.insert(name.to_string(), calls);
            }
        }
        counts
    }

    /// Clients blocked right now (in `XREAD BLOCK`).
    pub fn blocked_clients(&self) -> u64 {
        self.info_field("clients", "blocked_clients")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `n` distinct free ports whose cluster bus ports (port + 10000) are free
/// too. Every port is held until all are chosen, so none is handed out
/// twice and no node's port is another's bus port.
pub fn free_cluster_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    while ports.len() < n {
        let listener = TcpListener::bind("127.0.0.1:0").expect("no free port on 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        if port >= 55_000 {
            continue;
        }
        let Ok(bus) = TcpListener::bind(("127.0.0.1", port + 10_000)) else {
            continue;
        };
        held.push(listener);
        held.push(bus);
        ports.push(port);
    }
    ports
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free port on 127.0.0.1")
        .port()
}

pub fn signal_pid(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid} failed");
}

/// Commands a client sent itself: `INFO commandstats` also counts the
/// commands a script runs inside Redis (`get`, `set`, `xadd`, …).
pub fn client_commands(counts: &BTreeMap<String, u64>) -> u64 {
    counts
        .iter()
        .filter(|(name, _)| matches!(name.as_str(), "evalsha" | "eval" | "xread" | "script|load"))
        .map(|(_, n)| n)
        .sum()
}

/// Command calls between two [`RedisServer::command_counts`] snapshots.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// Polls `cond` until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// The role a re-executed test binary plays, if it is a child.
pub fn role() -> Option<String> {
    std::env::var("SF_TEST_ROLE").ok()
}

/// A child process: this test binary re-run with one exact test and a role.
/// It talks in lines: the parent writes commands to stdin, the child prints
/// `@@`-prefixed reports on stdout (other output is ignored).
pub struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Worker {
    pub fn spawn(test: &str, role: &str, env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env("SF_TEST_ROLE", role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("cannot re-execute the test binary");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print "test name ... " before it on the same line.
                if let Some(at) = line.find("@@") {
                    if tx.send(line[at + 2..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        Worker {
            child,
            stdin,
            lines,
        }
    }

    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next report, or a panic after `timeout` (a hang is a failure).
    pub fn recv(&self, timeout: Duration) -> String {
        self.lines.recv_timeout(timeout).unwrap_or_else(|e| {
            panic!(
                "no report from worker {} within {timeout:?}: {e}",
                self.child.id()
            )
        })
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal with the `kill` command (`"-STOP"`, `"-CONT"`).
    pub fn signal(&self, signal: &str) {
        signal_pid(self.child.id(), signal);
    }

    /// Waits for a clean exit.
    pub fn finish(mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "worker exited with {status}");
                return;
            }
            if start.elapsed() > timeout {
                self.kill();
                panic!("worker did not exit within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// In a child: prints a report for the parent.
pub fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@{line}").unwrap();
    out.flush().unwrap();
}

/// In a child: the parent's next command line (None at EOF).
pub fn command() -> Option<String> {
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim().to_string()),
    }
}

/// Median of a sample (sorted in place).
pub fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// A `redis-server --sentinel` child monitoring one primary as `mymaster`
/// (quorum 2), with a config file of its own (sentinels rewrite it). Killed
/// on drop.
pub struct SentinelServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl SentinelServer {
    /// Starts a sentinel that calls a primary down after `down_after_ms`.
    pub fn start(primary_port: u16, down_after_ms: u64) -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\nloglevel warning\n\
                 sentinel monitor mymaster 127.0.0.1 {primary_port} 2\n\
                 sentinel down-after-milliseconds mymaster {down_after_ms}\n\
                 sentinel failover-timeout mymaster 1000\n"
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server --sentinel");
        let sentinel = SentinelServer {
            child,
            port,
            _dir: dir,
        };
        wait_until("the sentinel answers PING", Duration::from_secs(10), || {
            sentinel
                .try_query::<String>(&mut redis::cmd("PING"))
                .is_some()
        });
        sentinel
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command to the sentinel; `None` if it does not answer.
    pub fn try_query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> Option<T> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut con = client
            .get_connection_with_timeout(Duration::from_millis(200))
            .ok()?;
        con.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        cmd.query(&mut con).ok()
    }

    /// The primary's port as this sentinel sees it.
    pub fn primary_port(&self) -> Option<u16> {
        let addr: Option<(String, u16)> = self.try_query(
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg("mymaster"),
        )?;
        addr.map(|(_, port)| port)
    }
}

impl Drop for SentinelServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local Redis Cluster: `masters` masters with one replica each, all on
/// loopback, a short node timeout so a failover takes about a second.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts one; tries again on fresh ports (up to 3 times) when a port
    /// was taken meanwhile by another test run on the same machine.
    pub fn start(masters: usize) -> Self {
        for _ in 0..2 {
            if let Ok(cluster) = std::panic::catch_unwind(|| Self::try_start(masters)) {
                return cluster;
            }
        }
        Self::try_start(masters)
    }

    fn try_start(masters: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<RedisServer> = free_cluster_ports(masters * 2)
            .into_iter()
            .map(|port| {
                let conf = dir.path().join(format!("nodes-{port}.conf"));
                let conf = conf.display().to_string();
                let args = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "500",
                    "--cluster-require-full-coverage",
                    "no",
                    // A replica may always take over: with the default, one
                    // whose master died is "disconnected for too long" in a
                    // test with a 500 ms node timeout and never fails over.
                    "--cluster-replica-validity-factor",
                    "0",
                ];
                RedisServer::start_on_with(port, &args)
            })
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("cannot run redis-cli (package redis-tools)");
        if !created.status.success() {
            let states: Vec<String> = nodes
                .iter()
                .map(|n| {
                    let mut con = n.connection();
                    let known: String = redis::cmd("CLUSTER")
                        .arg("NODES")
                        .query(&mut con)
                        .unwrap_or_default();
                    let keys: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap_or(99);
                    format!(
                        "{}: {} nodes known, {keys} keys",
                        n.port(),
                        known.lines().count()
                    )
                })
                .collect();
            panic!(
                "redis-cli --cluster create failed: {}{} {states:?}",
                String::from_utf8_lossy(&created.stdout),
                String::from_utf8_lossy(&created.stderr)
            );
        }
        let cluster = RedisCluster { nodes, _dir: dir };
        wait_until(
            "every node says the cluster is ok",
            Duration::from_secs(20),
            || cluster.nodes.iter().all(|n| n.cluster_ok()),
        );
        cluster
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The node that is master for `slot` now, asked of `nodes[from]`.
    pub fn master_of(&self, slot: u16, from: usize) -> usize {
        let slots: Vec<(u16, u16, (String, u16))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query::<Vec<redis::Value>>(&mut self.nodes[from].connection())
            .unwrap()
            .into_iter()
            .map(|range| {
                let redis::Value::Array(parts) = range else {
                    panic!("a slot range is an array")
                };
                let int = |v: &redis::Value| match v {
                    redis::Value::Int(n) => *n as u16,
                    other => panic!("not an int: {other:?}"),
                };
                let redis::Value::Array(master) = &parts[2] else {
                    panic!("a master is an array")
                };
                (
                    int(&parts[0]),
                    int(&parts[1]),
                    (String::new(), int(&master[1])),
                )
            })
            .collect();
        let port = slots
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
            .map(|(_, _, (_, port))| *port)
            .expect("the slot is served");
        self.nodes.iter().position(|n| n.port() == port).unwrap()
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut self.nodes[0].connection())
            .unwrap()
    }
}

impl RedisServer {
    /// Whether this cluster node says `cluster_state:ok` with every slot
    /// assigned.
    pub fn cluster_ok(&self) -> bool {
        let Some(mut con) = self.try_connection() else {
            return false;
        };
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut con)
            .unwrap_or_default();
        info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
    }
}
