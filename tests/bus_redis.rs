//! Scale-out through a real Redis (127.0.0.1:6379, or one the tests start:
//! `tests/bus_support/servers.rs`): several replicas sharing one bus, connection kills, a bus
//! outage (on a private redis-server), resume on another replica.

mod bus_support;
mod support;

use bus_support::{Bus, Cutter, Kind, redis};

// MAXLEN ~ trims whole stream nodes (100 entries by default): 500 events
// with a history of 5 leave the first one far behind.
bus_support::shared_bus_tests!(Kind::Redis, redis, expiring = 500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_mid_stream_loses_nothing() {
    let bus = Bus::new(Kind::Redis, redis());
    let cutter = Cutter::Redis {
        url: redis().into(),
        prefix: bus.prefix.clone(),
    };
    bus_support::killed_connection_loses_nothing(&bus, &cutter).await;
}
