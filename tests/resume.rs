//! Resume on a single replica with the memory bus: its per-topic history
//! serves the missed events, and a cursor it no longer reaches is refused.

mod bus_support;
mod support;

use bus_support::{Bus, Kind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_gets_every_missed_event_once() {
    bus_support::resume_on_another_replica(&Bus::new(Kind::Memory, "")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_cursor_is_refused() {
    bus_support::expired_cursor_is_refused(&Bus::new(Kind::Memory, "").history(5), 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_since_a_time() {
    bus_support::replay_since(&Bus::new(Kind::Memory, "").history(5), 20).await;
}
