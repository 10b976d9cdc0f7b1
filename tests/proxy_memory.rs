//! A 20 MB upstream response must stream through subcar without being
//! buffered whole: this test binary counts every live heap byte of the
//! process (upstream, subcar and client together) and checks that the peak
//! stays far below the body's size.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use support::upstream::hello_behaving;
use support::{TestSubcar, TestUpstream};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let live = if new_size > layout.size() {
            LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size()
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed) - (layout.size() - new_size)
        };
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[tokio::test]
async fn peak_memory_stays_flat_while_20_mb_stream_through() {
    let upstream = TestUpstream::start().await;
    let subcar = TestSubcar::builder(upstream.url()).spawn().await;
    // Warm up pools and lazily initialised state before measuring.
    support::post_json(&subcar.graphql_url(), json!({"query": "{ hello }"})).await;

    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    let mut res = hello_behaving(&reqwest::Client::new(), &subcar.graphql_url(), "big")
        .send()
        .await
        .unwrap();
    let mut total = 0usize;
    while let Some(chunk) = res.chunk().await.unwrap() {
        total += chunk.len();
    }
    let peak_growth = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
    assert!(
        total > support::upstream::BIG_BODY_BYTES,
        "whole body received: {total}"
    );
    // Buffering would need at least 20 MB; streaming needs a few socket
    // buffers and in-flight chunks.
    assert!(
        peak_growth < 4 * 1024 * 1024,
        "peak heap grew by {peak_growth} bytes while streaming {total} bytes"
    );
    println!("streamed {total} bytes; peak heap growth {peak_growth} bytes");
}
