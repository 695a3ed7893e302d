//! placeholder docs
#![warn(missing_docs)]

mod call;
mod error;
mod group;
mod sharded_map;
mod stats;
mod sync;

pub use error::{LeaderPanicked, Timeout};
pub use group::{Group, Outcome, Role};
pub use stats::Stats;
