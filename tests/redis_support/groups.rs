//! Group-side helpers shared by the `redis_*` integration tests.

#![allow(dead_code)]

use std::time::Duration;

use sync_singleflight::redis::{RedisConfig, RedisGroup};

/// A test configuration: 1 s lease, short timeouts and breaker cooldown.
pub fn config(namespace: &str) -> RedisConfig {
    let mut config = RedisConfig::new(namespace, 1);
    config.lease = Duration::from_secs(1);
    config.connect_timeout = Duration::from_millis(200);
    config.io_timeout = Duration::from_millis(300);
    config.breaker_cooldown = Duration::from_millis(500);
    config.max_wait = Duration::from_secs(20);
    config
}

/// A group standing for one replica (each has its own local group and
/// connections, so two of them in one process talk to Redis like two
/// processes would).
pub fn replica<V>(url: &str, config: RedisConfig) -> RedisGroup<String, V> {
    RedisGroup::open(url, config).expect("valid test configuration")
}

/// Two replicas of one configuration.
pub fn replicas<V>(
    url: &str,
    config: RedisConfig,
) -> (RedisGroup<String, V>, RedisGroup<String, V>) {
    (replica(url, config.clone()), replica(url, config))
}

/// `config` with another lease.
pub fn with_lease(mut config: RedisConfig, lease: Duration) -> RedisConfig {
    config.lease = lease;
    config
}
