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
    /// Extra `redis-server` arguments, kept for a restart.
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free port; panics with install instructions
    /// when `redis-server` is not on PATH.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server on a free port with extra arguments
    /// (`["--timeout", "1"]`, `["--maxclients", "40"]`).
    pub fn start_with(args: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("no free port on 127.0.0.1")
            .port();
        Self::start_on_with(port, args)
    }

    /// Starts a server on `port` (used to restart after [`kill`](Self::kill)).
    pub fn start_on(port: u16) -> Self {
        Self::start_on_with(port, &[])
    }

    fn start_on_with(port: u16, args: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .args(args)
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
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        wait_until("redis-server answers PING", Duration::from_secs(10), || {
            let mut child = server.child.lock().unwrap();
            if let Some(Ok(Some(status))) = child.as_mut().map(Child::try_wait) {
                panic!("redis-server exited at once with {status} (port {port} taken?)");
            }
            drop(child);
            server.try_connection().is_some()
        });
        server
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
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
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let fresh = Self::start_on_with(self.port, &args);
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

fn signal_pid(pid: u32, signal: &str) {
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
