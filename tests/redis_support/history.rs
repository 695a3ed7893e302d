//! A history checker for dedup across processes: log every call (process,
//! thread, start, end, value id) and every backend run (process, start,
//! end, value id, burst), as lines that cross process boundaries, then
//! check the two promises mechanically:
//!
//! 1. each caller's value came from a flight that overlapped its call
//!    (its run started before the call ended, and the flight ended after
//!    the call started): nothing stale, nothing cached. A flight ends when
//!    its leader's call returns, not when `f` does: until the leader has
//!    published, a newcomer joins the flight and gets its value, exactly
//!    as in a local `Group`;
//! 2. how many runs each burst made.
//!
//! Times are microseconds of the wall clock, the same for every process
//! on one machine. Uses std only.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A value id unique across processes: the process id, then a counter.
pub fn new_value_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    (u64::from(std::process::id()) << 32) | NEXT.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Call {
        process: u32,
        thread: u64,
        start: u64,
        end: u64,
        value: u64,
    },
    Run {
        process: u32,
        start: u64,
        end: u64,
        value: u64,
        burst: u64,
    },
}

impl Event {
    pub fn line(&self) -> String {
        match self {
            Event::Call {
                process,
                thread,
                start,
                end,
                value,
            } => {
                format!("call {process} {thread} {start} {end} {value}")
            }
            Event::Run {
                process,
                start,
                end,
                value,
                burst,
            } => {
                format!("run {process} {start} {end} {value} {burst}")
            }
        }
    }

    pub fn parse(line: &str) -> Option<Event> {
        let mut parts = line.split(' ');
        let kind = parts.next()?;
        let n: Vec<u64> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
        match (kind, n.as_slice()) {
            ("call", &[process, thread, start, end, value]) => Some(Event::Call {
                process: process as u32,
                thread,
                start,
                end,
                value,
            }),
            ("run", &[process, start, end, value, burst]) => Some(Event::Run {
                process: process as u32,
                start,
                end,
                value,
                burst,
            }),
            _ => None,
        }
    }
}

/// One process's log.
#[derive(Default)]
pub struct Log {
    events: Mutex<Vec<Event>>,
}

impl Log {
    /// Runs `f` as the backend of `burst`: logs the run and returns its
    /// fresh value id.
    pub fn run(&self, burst: u64, f: impl FnOnce()) -> u64 {
        let start = now_us();
        f();
        let value = new_value_id();
        self.push(Event::Run {
            process: std::process::id(),
            start,
            end: now_us(),
            value,
            burst,
        });
        value
    }

    /// Makes one call and logs it; `call` returns the value id it got.
    pub fn call(&self, thread: u64, call: impl FnOnce() -> u64) -> u64 {
        let start = now_us();
        let value = call();
        self.push(Event::Call {
            process: std::process::id(),
            thread,
            start,
            end: now_us(),
            value,
        });
        value
    }

    fn push(&self, event: Event) {
        self.events.lock().unwrap().push(event);
    }

    /// Takes the events logged so far.
    pub fn drain(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

/// What a history that passed [`check`] contained.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub calls: usize,
    pub runs: usize,
    pub runs_per_burst: BTreeMap<u64, usize>,
}

/// Checks promise 1 for every call and counts runs per burst.
pub fn check(events: &[Event]) -> Result<Summary, String> {
    let mut runs = BTreeMap::new();
    let mut summary = Summary::default();
    for event in events {
        if let Event::Run {
            process,
            start,
            end,
            value,
            burst,
        } = event
        {
            // The flight lasts until its leader's call (the one in the same
            // process that got this value and contains the run) returned.
            let leader_end = events.iter().find_map(|other| match other {
                Event::Call {
                    process: p,
                    start: s,
                    end: e,
                    value: v,
                    ..
                } if p == process && v == value && s <= start && e >= end => Some(*e),
                _ => None,
            });
            if runs
                .insert(*value, (*start, leader_end.unwrap_or(*end)))
                .is_some()
            {
                return Err(format!("two runs produced value {value}"));
            }
            *summary.runs_per_burst.entry(*burst).or_insert(0) += 1;
            summary.runs += 1;
        }
    }
    for event in events {
        if let Event::Call {
            start, end, value, ..
        } = event
        {
            let Some(&(run_start, run_end)) = runs.get(value) else {
                return Err(format!("{event:?}: no run produced value {value}"));
            };
            if run_start > *end || run_end < *start {
                return Err(format!(
                    "{event:?}: its value's run ({run_start}..{run_end}) did not overlap the call"
                ));
            }
            summary.calls += 1;
        }
    }
    Ok(summary)
}

#[test]
fn history_check_catches_stale_and_unknown_values() {
    let run = |value, start, end| Event::Run {
        process: 1,
        start,
        end,
        value,
        burst: 0,
    };
    let call = |value, start, end| Event::Call {
        process: 2,
        thread: 0,
        start,
        end,
        value,
    };
    let good = [run(7, 10, 20), call(7, 5, 21), call(7, 19, 22)];
    // Joined after f returned, before the leader's call (publish) ended.
    let leader = Event::Call {
        process: 1,
        thread: 0,
        start: 9,
        end: 25,
        value: 7,
    };
    assert!(check(&[run(7, 10, 20), leader, call(7, 22, 30)]).is_ok());
    let summary = check(&good).unwrap();
    assert_eq!((summary.calls, summary.runs_per_burst[&0]), (2, 1));
    assert!(
        check(&[run(7, 10, 20), call(7, 21, 30)])
            .unwrap_err()
            .contains("did not overlap")
    );
    assert!(check(&[call(8, 1, 2)]).unwrap_err().contains("no run"));
    for e in good {
        assert_eq!(Event::parse(&e.line()), Some(e));
    }
}
