//! The replica modes' process plumbing, shared by the demos (included with
//! `#[path]`): a throwaway `redis-server` child, and replicas that are this
//! very binary re-executed in a hidden child mode. Every child is killed
//! when its handle drops, and a replica also exits when its stdin closes,
//! so nothing outlives the demo even if the demo itself is killed.

#![allow(dead_code)] // each demo uses a part

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A `redis-server` on a free 127.0.0.1 port with persistence off, so it
/// leaves no files behind. Killed on drop.
pub struct RedisServer {
    child: Child,
    port: u16,
    /// Kills the server if we die without dropping it (SIGKILL).
    _watchdog: Option<Watchdog>,
}

impl RedisServer {
    /// Starts one, or says in one line why it could not, including how to
    /// install it when it is not on PATH.
    pub fn start() -> Result<RedisServer, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => "the replica mode needs redis-server on PATH: \
                     install it with `apt-get install redis-server` (or `brew install redis`) \
                     and run again"
                    .to_string(),
                _ => format!("cannot start redis-server: {e}"),
            })?;
        let _watchdog = Watchdog::spawn(child.id());
        let mut server = RedisServer {
            child,
            port,
            _watchdog,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server.answers_ping() {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("redis-server exited at once with {status}"));
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING within 10 s".to_string());
            }
            thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    /// A raw RESP `PING`, so this file needs no Redis client and builds
    /// without the `redis` feature.
    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut reply = [0; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether `key` exists (a raw RESP `EXISTS`, like `answers_ping`);
    /// `None` when the server does not answer.
    pub fn exists(&self, key: &str) -> Option<bool> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .ok()?;
        let request = format!("*2\r\n$6\r\nEXISTS\r\n${}\r\n{key}\r\n", key.len());
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = [0; 4];
        stream.read_exact(&mut reply).ok()?;
        match &reply {
            b":0\r\n" => Some(false),
            b":1\r\n" => Some(true),
            _ => None,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sh` blocked reading a pipe from us: the pipe closes when this process
/// exits in any way, and the shell then kills `pid`. redis-server has no
/// parent-death option of its own.
struct Watchdog(Child);

impl Watchdog {
    fn spawn(pid: u32) -> Option<Watchdog> {
        Command::new("sh")
            .args(["-c", &format!("read _; kill {pid} 2>/dev/null")])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .map(Watchdog)
    }
}

impl Drop for Watchdog {
    // Killed rather than released: the server it watches is already gone,
    // and its pid may be reused.
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A replica: this binary re-executed with `args`. It talks in lines on
/// stdout; its stderr is ours, so its errors reach the terminal.
pub struct Replica {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Replica {
    pub fn spawn(args: &[String]) -> Result<Replica, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this binary: {e}"))?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting a replica: {e}"))?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(Replica {
            child,
            stdin,
            stdout,
        })
    }

    /// The replica's next line; an error when it exited instead.
    pub fn line(&mut self) -> Result<String, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => Ok(line.trim_end().to_string()),
            _ => Err(format!("replica {} exited early", self.child.id())),
        }
    }

    /// Sends a signal (`"-STOP"`, `"-CONT"`) with the `kill` command.
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        let pid = self.child.id().to_string();
        match Command::new("kill").args([signal, &pid]).status() {
            Ok(status) if status.success() => Ok(()),
            other => Err(format!("kill {signal} {pid}: {other:?}")),
        }
    }

    pub fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().expect("stdin is open until drop");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to replica {}: {e}", self.child.id()))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a replica: exits the process once the parent closes our stdin or
/// dies, whichever comes first.
pub fn exit_when_stdin_closes() -> ! {
    let mut sink = Vec::new();
    let _ = io::stdin().lock().read_to_end(&mut sink);
    std::process::exit(0)
}

/// Which replica serves the `i`-th request of a burst whose requests cycle
/// over `keys` keys: each key's requests go round-robin over the replicas
/// (starting one further along each burst), so every replica sees every
/// key even when `keys` is a multiple of `replicas`.
pub fn replica_for(i: usize, keys: usize, replicas: usize, burst: usize) -> usize {
    (i / keys + i % keys + burst) % replicas
}
