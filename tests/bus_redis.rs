//! Scale-out through a real Redis (127.0.0.1:6379, or one the tests start:
//! `tests/bus_support/servers.rs`): several replicas sharing one bus, connection kills, a bus
//! outage (on a private redis-server), resume on another replica.

mod bus_support;
mod support;

use bus_support::{Bus, Cutter, Kind, redis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_every_replica_once_in_order() {
    bus_support::fan_out_across_three_replicas(Kind::Redis, redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_marks_no_id_on_any_replica() {
    bus_support::refused_batch_marks_no_id(Kind::Redis, redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_mid_stream_loses_nothing() {
    let bus = Bus::new(Kind::Redis, redis());
    let cutter = Cutter::Redis {
        url: redis().into(),
        prefix: bus.prefix.clone(),
    };
    bus_support::killed_connection_loses_nothing(&bus, &cutter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_outage_is_503_and_delivery_resumes() {
    bus_support::bus_down_then_back(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_id_is_deduplicated_across_replicas() {
    bus_support::webhook_id_replay_across_replicas(Kind::Redis, redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_hang_is_503_and_the_refused_events_are_never_delivered() {
    bus_support::bus_hang_is_503_and_never_delivered(Kind::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_on_another_replica_gets_every_missed_event_once() {
    bus_support::resume_on_another_replica(&Bus::new(Kind::Redis, redis())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_cursor_is_refused() {
    // MAXLEN ~ trims whole stream nodes (100 entries by default): 500
    // events with a history of 5 leave the first one far behind.
    bus_support::expired_cursor_is_refused(&Bus::new(Kind::Redis, redis()).history(5), 500).await;
}
