//! (f) Many idle connections on one small box: `REALTIME_BENCH_MANY=N`
//! opens N graphql-transport-ws subscribers (one subscription each) on one
//! subcar, spread over source addresses in 127.0.0.0/8 so that no
//! (source, destination) pair runs out of ephemeral ports, and reports
//! subcar's resident memory, the time to connect and subscribe them all,
//! and the latency of events delivered to every one of them.
//!
//! With `REALTIME_BENCH_SOAK=SECONDS` it is a soak instead: the N
//! subscribers receive `REALTIME_BENCH_SOAK_RATE` events/s (default 100)
//! for that long; subcar's resident memory is sampled every 10 s (start,
//! end, peak printed) and every subscriber must have every event (0 lost).
//! `benches/soak.sh` runs the hour-long one.
//!
//! Both processes need N descriptors and more: the bench raises its soft
//! `RLIMIT_NOFILE` to the hard limit (subcar inherits it) and says so when
//! the hard limit is below what N needs, since raising the hard limit takes
//! a privilege (`CAP_SYS_RESOURCE`) a container often lacks.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

/// Connections per source address: below the 28,232 ports of Linux's
/// default ephemeral range, with room for the bench's other sockets.
const PER_SOURCE: usize = 20_000;

/// Events published, one at a time, once everyone is connected.
const EVENTS: usize = 20;

pub fn requested() -> Option<usize> {
    std::env::var("REALTIME_BENCH_MANY").ok()?.parse().ok()
}

/// Raises the soft descriptor limit to the hard one; returns the limit now
/// in force.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

fn source(i: usize) -> IpAddr {
    let base = u32::from(Ipv4Addr::new(127, 1, 0, 1));
    IpAddr::V4(Ipv4Addr::from(base + (i / PER_SOURCE) as u32))
}

/// Opens `n` subscribers, 256 handshakes in flight.
async fn open_spread(addr: SocketAddr, n: usize) -> Vec<Client> {
    let sem = Arc::new(tokio::sync::Semaphore::new(256));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let sem = sem.clone();
            tokio::spawn(async move {
                let _p = sem.acquire().await.unwrap();
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(source(i), 0)).unwrap();
                let stream = socket.connect(addr).await.expect("connect");
                Client::Ws(subscribed(upgrade(stream, addr, true).await, true).await)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn soak_seconds() -> Option<u64> {
    std::env::var("REALTIME_BENCH_SOAK").ok()?.parse().ok()
}

pub async fn run(dir: &std::path::Path, n: usize) {
    let limit = raise_fd_limit();
    // subcar: its listeners, the bus, a few files; the bench: its readers.
    let needed = n as u64 + 200;
    if limit < needed {
        println!(
            "(f) {n} connections need {needed} descriptors per process; RLIMIT_NOFILE's hard \
             limit here is {limit} and raising it needs CAP_SYS_RESOURCE: run with at most {}",
            limit.saturating_sub(200)
        );
        std::process::exit(2);
    }
    // The load generator answers pings only once every socket is open (its
    // reader takes them all at once), which at this count can take longer
    // than a heartbeat; and on a machine busy with other work its
    // `connection_init` can come later than the default 3 s.
    let target = start_subcar_for(
        dir,
        false,
        n + 100,
        "[heartbeat]\ninterval = \"10m\"\ninit_timeout = \"60s\"\n",
    )
    .await;
    // Warm-up, as in (c): the allocator's arenas and the dispatcher exist
    // before the baseline.
    drop(open_spread(target.addr(), 10).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(target.pid());
    let started = Instant::now();
    let clients = open_spread(target.addr(), n).await;
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss_kib(target.pid());

    if let Some(seconds) = soak_seconds() {
        return soak(&target, clients, seconds, rss_after).await;
    }
    let phase = Phase::new(EVENTS, n, true);
    let readers = read_all(clients, &phase);
    let mut publisher = Publisher::new(&target).await;
    let mut last = Vec::with_capacity(EVENTS);
    for e in 0..EVENTS {
        let t0 = phase.now_ns();
        phase.sent_ns[e].store(t0, Ordering::Release);
        publisher.publish(e..e + 1).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while phase.count[e].load(Ordering::Relaxed) < n as u32 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        assert_eq!(
            phase.count[e].load(Ordering::Relaxed),
            n as u32,
            "event {e} reached every subscriber ({} connections closed by subcar)",
            phase.closed.load(Ordering::Relaxed)
        );
        last.push(phase.last_ns[e].load(Ordering::Relaxed).saturating_sub(t0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(readers);
    let mut each: Vec<u64> = phase
        .latencies
        .iter()
        .flat_map(|l| std::mem::take(&mut *l.lock()))
        .collect();
    each.sort_unstable();
    last.sort_unstable();
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "\n(f) {n} idle connections, one subscription each, one subcar (cores: {})",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "  connect + connection_ack + subscribe, all:   {connect_s:.2} s ({:.0}/s)",
        n as f64 / connect_s
    );
    println!(
        "  subcar resident memory:                      {:.1} MiB ({:.1} MiB before, {:.2} KiB per connection)",
        rss_after as f64 / 1024.0,
        rss_before as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / n as f64
    );
    println!(
        "  one event to all, per subscriber ({EVENTS} events): p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(&each, 0.5)),
        ms(pct(&each, 0.99))
    );
    println!(
        "  one event to all, until the last has it:     p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(&last, 0.5)),
        ms(pct(&last, 0.99))
    );
}

async fn soak(target: &Target, clients: Vec<Client>, seconds: u64, rss_start: u64) {
    let n = clients.len();
    let rate: u64 = std::env::var("REALTIME_BENCH_SOAK_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(100);
    let events = (rate * seconds) as usize;
    let phase = Phase::new(events, n, false);
    let readers = read_all(clients, &phase);
    let mut publisher = Publisher::new(target).await;
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let (mut peak, mut samples) = (rss_start, Vec::new());
    let mut next_sample = Instant::now();
    for e in 0..events {
        tick.tick().await;
        publisher.publish(e..e + 1).await;
        if Instant::now() >= next_sample {
            let rss = rss_kib(target.pid());
            peak = peak.max(rss);
            samples.push(rss);
            eprintln!(
                "[soak] {:>5} s: {e} events published, rss {:.1} MiB, slowest subscriber at {}",
                e as u64 / rate,
                rss as f64 / 1024.0,
                phase.min_received()
            );
            next_sample += Duration::from_secs(10);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while phase.total() < (events * n) as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_end = rss_kib(target.pid());
    peak = peak.max(rss_end);
    let (total, closed) = (phase.total(), phase.closed.load(Ordering::Relaxed));
    stop(readers);
    let expected = (events * n) as u64;
    let mib = |k: u64| k as f64 / 1024.0;
    println!("\n(soak) {n} subscribers, {rate} events/s for {seconds} s");
    println!(
        "  subcar resident memory: start {:.1} MiB, end {:.1} MiB, peak {:.1} MiB ({} samples)",
        mib(rss_start),
        mib(rss_end),
        mib(peak),
        samples.len()
    );
    println!(
        "  deliveries: {total} of {expected} ({} lost), {closed} connections closed by subcar",
        expected - total.min(expected)
    );
    assert_eq!(total, expected, "every subscriber received every event");
}
