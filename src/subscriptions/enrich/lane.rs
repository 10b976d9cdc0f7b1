//! The order in which one group's enriched events are delivered.

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Delivery order of one group's enriched events: each event takes a
/// ticket when planned and delivers after the previous ticket is done.
#[derive(Debug, Default)]
pub(crate) struct Lane {
    state: Mutex<LaneState>,
}

#[derive(Debug, Default)]
struct LaneState {
    last: u64,
    /// Fires when the newest ticket is done; `None` when no ticket is out.
    tail: Option<oneshot::Receiver<()>>,
}

pub(crate) struct Ticket {
    seq: u64,
    previous: Option<oneshot::Receiver<()>>,
    done: oneshot::Sender<()>,
}

impl Lane {
    pub(super) fn ticket(&self) -> Ticket {
        let (done, rx) = oneshot::channel();
        let mut s = self.state.lock();
        s.last += 1;
        Ticket {
            seq: s.last,
            previous: s.tail.replace(rx),
            done,
        }
    }

    pub(super) fn finish(&self, ticket: Ticket) {
        let _ = ticket.done.send(());
        let mut s = self.state.lock();
        if s.last == ticket.seq {
            // Nobody queued behind this ticket: its receiver is the tail.
            s.tail = None;
        }
    }
}

impl Ticket {
    pub(super) async fn turn(&mut self) {
        if let Some(previous) = self.previous.take() {
            // An error means the previous delivery was abandoned: go on.
            let _ = previous.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_lane_delivers_in_ticket_order_and_empties() {
        let lane = Arc::new(Lane::default());
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Later tickets finish their "fetch" first.
        for n in 0..5u64 {
            let mut ticket = lane.ticket();
            let (lane, order) = (lane.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(50 - n * 10)).await;
                ticket.turn().await;
                order.lock().push(n);
                lane.finish(ticket);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4]);
        assert!(
            lane.state.lock().tail.is_none(),
            "nothing waits: no state kept"
        );
    }

    #[tokio::test]
    async fn an_abandoned_ticket_does_not_block_the_next() {
        let lane = Lane::default();
        let first = lane.ticket();
        let mut second = lane.ticket();
        drop(first);
        tokio::time::timeout(Duration::from_secs(1), second.turn())
            .await
            .expect("the second ticket's turn comes");
        lane.finish(second);
        assert!(lane.state.lock().tail.is_none());
    }
}
