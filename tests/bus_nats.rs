//! Scale-out through NATS JetStream (127.0.0.1:4222, or a server the tests
//! start: `tests/bus_support/servers.rs`): the same scenarios as `tests/bus_redis.rs`. Connection drops
//! go through a proxy in front of the shared server; the outage uses a
//! private nats-server.

mod bus_support;
mod support;

use bus_support::{Bus, Cutter, Kind, Proxy, nats};

bus_support::shared_bus_tests!(Kind::Nats, nats, expiring = 20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_drop_mid_stream_loses_nothing() {
    let proxy = Proxy::start("127.0.0.1:4222".parse().unwrap()).await;
    let bus = Bus::new(Kind::Nats, nats()).via(&format!("nats://{}", proxy.addr));
    bus_support::killed_connection_loses_nothing(&bus, &Cutter::Proxy(proxy)).await;
}
