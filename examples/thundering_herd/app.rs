//! The pieces of the thundering-herd demo, shared with `tests/http.rs`: an
//! embedded SQLite database behind a small blocking connection pool, a
//! threaded `tiny_http` server that looks users up (directly or through a
//! `Group`) and serves its own Prometheus metrics, and a `ureq` client that
//! fires bursts at it.

#![allow(dead_code)] // the demo and the test each use a part

use std::fmt;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rusqlite::{Connection, OptionalExtension};
#[cfg(feature = "redis")]
use sync_singleflight::redis::RedisGroup;
use sync_singleflight::{Group, Role};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub email: String,
}

impl User {
    /// What the database holds for `id`, so clients can check every body.
    pub fn expected(id: u64) -> User {
        User {
            id,
            name: format!("user-{id}"),
            email: format!("user{id}@example.test"),
        }
    }

    pub fn to_json(&self) -> String {
        format!(
            r#"{{"id":{},"name":"{}","email":"{}"}}"#,
            self.id, self.name, self.email
        )
    }
}

#[derive(Debug)]
pub enum LookupError {
    NotFound(u64),
    Sqlite(rusqlite::Error),
    /// A database error another replica's leader hit, as it reported it.
    Replica(String),
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::NotFound(id) => write!(f, "user {id} not found"),
            LookupError::Sqlite(e) => write!(f, "database error: {e}"),
            LookupError::Replica(e) => write!(f, "database error in another replica: {e}"),
        }
    }
}

/// Errors are not `Clone`, so the group shares them through an `Arc`.
pub type Lookup = Result<User, Arc<LookupError>>;

/// Called before each query with the id being looked up; tests use it to
/// hold a query until every request of a burst has arrived.
pub type QueryGate = Box<dyn Fn(u64) + Send + Sync>;

/// A SQLite file behind a fixed pool of connections; every query that
/// reaches SQLite is counted.
pub struct Database {
    pool: Mutex<Vec<Connection>>,
    returned: Condvar,
    queries: AtomicU64,
    delay: Duration,
    gate: Option<QueryGate>,
}

impl Database {
    /// Creates `users` rows in `dir/users.db`, calling `row_written` after
    /// each, and opens `connections` connections. Each lookup holds a
    /// connection for `delay` before its query, standing in for a slow
    /// database.
    pub fn create(
        dir: &Path,
        users: u64,
        connections: usize,
        delay: Duration,
        row_written: &dyn Fn(),
    ) -> rusqlite::Result<Database> {
        let path = dir.join("users.db");
        let mut setup = Connection::open(&path)?;
        setup.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL);",
        )?;
        let insert = setup.transaction()?;
        {
            let mut row =
                insert.prepare("INSERT INTO users (id, name, email) VALUES (?1, ?2, ?3)")?;
            for id in 1..=users {
                let user = User::expected(id);
                row.execute((user.id, &user.name, &user.email))?;
                row_written();
            }
        }
        insert.commit()?;
        Database::open(dir, connections, delay)
    }

    /// Opens `connections` connections to the `users.db` that
    /// [`create`](Self::create) made in `dir`, as a replica over the same
    /// file does.
    pub fn open(dir: &Path, connections: usize, delay: Duration) -> rusqlite::Result<Database> {
        let path = dir.join("users.db");
        let pool = (0..connections.max(1))
            .map(|_| Connection::open(&path))
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Database {
            pool: Mutex::new(pool),
            returned: Condvar::new(),
            queries: AtomicU64::new(0),
            delay,
            gate: None,
        })
    }

    pub fn with_gate(mut self, gate: QueryGate) -> Database {
        self.gate = Some(gate);
        self
    }

    /// Queries that reached SQLite so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }

    /// The slow lookup: waits for a free connection, holds it for the
    /// configured delay, then runs a real query.
    pub fn find_user(&self, id: u64) -> Lookup {
        if let Some(gate) = &self.gate {
            gate(id);
        }
        let connection = {
            let mut pool = self.pool.lock().unwrap();
            loop {
                match pool.pop() {
                    Some(connection) => break connection,
                    None => pool = self.returned.wait(pool).unwrap(),
                }
            }
        };
        thread::sleep(self.delay);
        self.queries.fetch_add(1, Ordering::SeqCst);
        let found = connection
            .query_row(
                "SELECT id, name, email FROM users WHERE id = ?1",
                [id],
                |row| {
                    Ok(User {
                        id: row.get(0)?,
                        name: row.get(1)?,
                        email: row.get(2)?,
                    })
                },
            )
            .optional();
        self.pool.lock().unwrap().push(connection);
        self.returned.notify_one();
        match found {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(Arc::new(LookupError::NotFound(id))),
            Err(e) => Err(Arc::new(LookupError::Sqlite(e))),
        }
    }
}

/// The process-wide Prometheus recorder. The `metrics` facade allows one
/// recorder per process, and the demo runs several servers (the test runs
/// them in parallel), so the first caller installs it and every server
/// renders the same registry; the `mode` label tells the servers apart.
/// Call this before creating a `Group`, so that a group built with the
/// crate's `metrics` feature records into it from its first flight.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // `render` drains the histograms itself; the demo scrapes rarely and
        // briefly, so it needs no upkeep thread.
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .expect("no other metrics recorder is installed in this process");
        metrics::describe_counter!(
            "demo_http_requests_total",
            "HTTP requests answered, by mode and status"
        );
        metrics::describe_counter!(
            "demo_sqlite_queries_total",
            "user lookups that reached SQLite, by mode"
        );
        metrics::describe_histogram!(
            "demo_http_request_seconds",
            metrics::Unit::Seconds,
            "time from a worker taking a request to its reply being ready (queueing before \
             and sending after are not counted), by mode"
        );
        handle
    })
}

/// The application: the database, and optionally a group in front of it.
pub struct App {
    pub db: Database,
    pub group: Option<Arc<Group<u64, Lookup>>>,
    /// A group shared with the other replicas through Redis, in place of
    /// `group`.
    #[cfg(feature = "redis")]
    pub redis: Option<RedisGroup<u64, Shared>>,
    /// For each flight its leader ran: how many callers it served.
    pub flight_sizes: Mutex<Vec<usize>>,
    /// The `mode` label of this server's series: "direct" or "group".
    pub mode: &'static str,
}

impl App {
    pub fn new(db: Database, group: Option<Arc<Group<u64, Lookup>>>) -> App {
        prometheus();
        App {
            db,
            mode: if group.is_some() { "group" } else { "direct" },
            group,
            #[cfg(feature = "redis")]
            redis: None,
            flight_sizes: Mutex::new(Vec::new()),
        }
    }

    /// An app whose lookups go through `redis`, deduplicated across every
    /// replica that uses the same server and namespace.
    #[cfg(feature = "redis")]
    pub fn with_redis(db: Database, redis: RedisGroup<u64, Shared>) -> App {
        App {
            mode: "redis",
            redis: Some(redis),
            ..App::new(db, None)
        }
    }

    fn query(&self, id: u64) -> Lookup {
        metrics::counter!("demo_sqlite_queries_total", "mode" => self.mode).increment(1);
        self.db.find_user(id)
    }

    pub fn lookup(&self, id: u64) -> Lookup {
        #[cfg(feature = "redis")]
        if let Some(redis) = &self.redis {
            return redis.work(&id, || Shared::from(self.query(id))).into();
        }
        let Some(group) = &self.group else {
            return self.query(id);
        };
        let outcome = group.work_with_role(&id, || self.query(id));
        if outcome.role == Role::Leader {
            self.flight_sizes.lock().unwrap().push(outcome.callers);
        }
        outcome.value
    }
}

/// A `tiny_http` server on loopback with a fixed pool of worker threads.
pub struct Server {
    http: Arc<tiny_http::Server>,
    addr: SocketAddr,
    workers: Vec<thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(app: Arc<App>, workers: usize) -> io::Result<Server> {
        let http = tiny_http::Server::http("127.0.0.1:0").map_err(io::Error::other)?;
        let addr = http
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("not an IP listener"))?;
        let http = Arc::new(http);
        let mut server = Server {
            http,
            addr,
            workers: Vec::new(),
        };
        for _ in 0..workers.max(1) {
            let (http, app) = (server.http.clone(), app.clone());
            let worker = thread::Builder::new().spawn(move || {
                // `recv` fails once the server is unblocked for shutdown.
                while let Ok(request) = http.recv() {
                    let _ = respond(&app, request);
                }
            });
            match worker {
                Ok(worker) => server.workers.push(worker),
                Err(e) => {
                    server.stop();
                    return Err(e);
                }
            }
        }
        Ok(server)
    }

    /// Gives `tiny_http` one idle connection thread per client before a
    /// burst. Its pool spawns a thread for a new connection only when none
    /// is idle, and counts a thread as idle until it actually wakes, so a
    /// burst of connections arriving together queues behind busy keep-alive
    /// connections and is served one client at a time. Holding `clients`
    /// connections open at once (each answered, so each has its own thread)
    /// and then closing them leaves that many threads idle for the burst.
    pub fn warm_up(&self, clients: usize) {
        let ping = format!("{}/ping", self.base_url());
        let agents: Vec<ureq::Agent> = (0..clients)
            .map(|_| {
                let agent = client();
                // Each ping is answered before the next connection opens, so
                // the pool never sees two connections arrive together.
                let _ = agent
                    .get(&ping)
                    .call()
                    .and_then(|mut r| r.body_mut().read_to_string());
                agent
            })
            .collect();
        drop(agents);
        // Let the closed connections' threads go back to waiting.
        thread::sleep(Duration::from_millis(50));
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(self) {
        for _ in &self.workers {
            self.http.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

fn respond(app: &App, request: tiny_http::Request) -> io::Result<()> {
    let arrived = Instant::now();
    if request.url() == "/metrics" {
        let text = tiny_http::Header::from_bytes("Content-Type", "text/plain; version=0.0.4")
            .expect("static header");
        return request
            .respond(tiny_http::Response::from_string(prometheus().render()).with_header(text));
    }
    // How many lookups reached SQLite here, so a parent can add up a fleet.
    if request.url() == "/queries" {
        return request.respond(tiny_http::Response::from_string(
            app.db.queries().to_string(),
        ));
    }
    let id = request
        .url()
        .strip_prefix("/user/")
        .and_then(|id| id.parse::<u64>().ok());
    let (status, body) = match id {
        // Warm-up traffic, kept out of the request series.
        None if request.url() == "/ping" => {
            return request.respond(tiny_http::Response::from_string(r#"{"pong":true}"#));
        }
        None => (
            400,
            r#"{"error":"expected GET /user/<id> or GET /metrics"}"#.to_string(),
        ),
        Some(id) => match app.lookup(id) {
            Ok(user) => (200, user.to_json()),
            Err(error) => {
                let status = match *error {
                    LookupError::NotFound(_) => 404,
                    LookupError::Sqlite(_) | LookupError::Replica(_) => 500,
                };
                (status, format!(r#"{{"error":"{error}"}}"#))
            }
        },
    };
    let json =
        tiny_http::Header::from_bytes("Content-Type", "application/json").expect("static header");
    // Counted before the answer goes out: a client that got its response
    // and then scrapes /metrics must find its request counted (counting
    // after `respond` made tests/http.rs flaky under load).
    metrics::counter!("demo_http_requests_total", "mode" => app.mode, "status" => status.to_string())
        .increment(1);
    metrics::histogram!("demo_http_request_seconds", "mode" => app.mode)
        .record(arrived.elapsed().as_secs_f64());
    request.respond(
        tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(json),
    )
}

/// `GET path` on `base_url`, as text: for `/metrics`, once per run.
pub fn fetch(base_url: &str, path: &str) -> Result<String, ureq::Error> {
    client()
        .get(&format!("{base_url}{path}"))
        .call()?
        .body_mut()
        .read_to_string()
}

/// A `ureq` agent that reports HTTP errors as statuses, keeps its
/// connection alive between requests, and gives up after 30 s.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// One response as the client saw it.
#[derive(Debug)]
pub struct Reply {
    pub id: u64,
    pub status: u16,
    pub body: String,
    pub latency: Duration,
}

/// `GET /user/<id>` on `base_url`, timed; a failed request is status 0.
pub fn get_user(agent: &ureq::Agent, base_url: &str, id: u64) -> Reply {
    let start = Instant::now();
    let reply = agent.get(&format!("{base_url}/user/{id}")).call();
    let (status, body) = match reply {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let mut body = String::new();
            let _ = response.body_mut().as_reader().read_to_string(&mut body);
            (status, body)
        }
        Err(e) => (0, e.to_string()),
    };
    Reply {
        id,
        status,
        body,
        latency: start.elapsed(),
    }
}

/// Fires `ids.len()` requests at `base_url` from `concurrency` client
/// threads (each with its own `ureq` agent), calling `progress` after each.
/// Fails only when a client thread cannot be started; the threads that did
/// start still finish their requests first.
pub fn burst(
    base_url: &str,
    ids: &[u64],
    concurrency: usize,
    progress: &(dyn Fn() + Sync),
) -> io::Result<Vec<Reply>> {
    let concurrency = concurrency.clamp(1, ids.len().max(1));
    let chunks: Vec<Vec<u64>> = (0..concurrency)
        .map(|c| ids.iter().copied().skip(c).step_by(concurrency).collect())
        .collect();
    thread::scope(|s| {
        let handles = chunks
            .into_iter()
            .map(|chunk| {
                thread::Builder::new().spawn_scoped(s, move || {
                    let agent = client();
                    chunk
                        .into_iter()
                        .map(|id| {
                            let reply = get_user(&agent, base_url, id);
                            progress();
                            reply
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect())
    })
}

/// A lookup's result as it crosses processes: errors are not serializable
/// (and a `rusqlite::Error` means nothing in another process), so they
/// travel as what a client needs of them.
#[cfg(feature = "redis")]
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub enum Shared {
    Found(User),
    NotFound(u64),
    Failed(String),
}

#[cfg(feature = "redis")]
impl From<Lookup> for Shared {
    fn from(lookup: Lookup) -> Shared {
        match lookup {
            Ok(user) => Shared::Found(user),
            Err(error) => match *error {
                LookupError::NotFound(id) => Shared::NotFound(id),
                _ => Shared::Failed(error.to_string()),
            },
        }
    }
}

#[cfg(feature = "redis")]
impl From<Shared> for Lookup {
    fn from(shared: Shared) -> Lookup {
        match shared {
            Shared::Found(user) => Ok(user),
            Shared::NotFound(id) => Err(Arc::new(LookupError::NotFound(id))),
            Shared::Failed(message) => Err(Arc::new(LookupError::Replica(message))),
        }
    }
}
