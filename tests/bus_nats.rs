//! Scale-out through NATS JetStream (127.0.0.1:4222, or a server the tests
//! start: `tests/bus_support/servers.rs`): the same scenarios as `tests/bus_redis.rs`. Connection drops
//! go through a proxy in front of the shared server; the outage uses a
//! private nats-server.

mod bus_support;
mod support;

use bus_support::{Bus, Cutter, Kind, Proxy, nats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_replica_once_in_order() {
    bus_support::fan_out_across_three_replicas(Kind::Nats, nats()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_marks_no_id_on_any_replica() {
    bus_support::refused_batch_marks_no_id(Kind::Nats, nats()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_drop_mid_stream_loses_nothing() {
    let proxy = Proxy::start("127.0.0.1:4222".parse().unwrap()).await;
    let bus = Bus::new(Kind::Nats, nats()).via(&format!("nats://{}", proxy.addr));
    bus_support::killed_connection_loses_nothing(&bus, &Cutter::Proxy(proxy)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_outage_is_503_and_delivery_resumes() {
    bus_support::bus_down_then_back(Kind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_id_is_deduplicated_across_replicas() {
    bus_support::webhook_id_replay_across_replicas(Kind::Nats, nats()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_hang_is_503_and_the_refused_events_are_never_delivered() {
    bus_support::bus_hang_is_503_and_never_delivered(Kind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_on_another_replica_gets_every_missed_event_once() {
    bus_support::resume_on_another_replica(&Bus::new(Kind::Nats, nats())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_cursor_is_refused() {
    bus_support::expired_cursor_is_refused(&Bus::new(Kind::Nats, nats()).history(5), 20).await;
}
