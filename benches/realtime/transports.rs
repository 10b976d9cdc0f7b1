//! The transports comparison: (a)-(d) for subcar alone, once per client
//! transport (graphql-transport-ws, GraphQL over SSE, Apollo multipart),
//! each on a fresh subcar process, rounds in alternating order, printed as
//! medians with ratios to WebSocket and checked against issue 16's targets.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Runs every round and prints the tables.
pub async fn compare(dir: &std::path::Path, transports: &[Transport]) {
    let rounds: usize = std::env::var("REALTIME_TRANSPORT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3)
        .max(1);
    let mut results: Vec<Vec<Results>> = vec![Vec::new(); transports.len()];
    for round in 0..rounds {
        // Alternating (ABC, CBA, …): whatever drifts over a run (TIME_WAIT
        // sockets, the other tenants of the machine) falls on all alike.
        let mut order: Vec<usize> = (0..transports.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let transport = transports[i];
            eprintln!(
                "[transports] round {}/{rounds}: {}",
                round + 1,
                transport.name()
            );
            let target = start_subcar(dir, false).await;
            results[i].push(run_transport(&target, transport).await);
        }
    }
    print(transports, &results);
}

/// (a)+(c), (b) batched and unbatched, (d) for one transport; between
/// phases, subcar lets the last phase's streams go first.
async fn run_transport(target: &Target, transport: Transport) -> Results {
    let mut r = Results::default();
    fanout(target, transport, &mut r).await;
    settle(target, transport).await;
    r.batched_per_s = throughput(target, transport, 100).await;
    settle(target, transport).await;
    r.unbatched_per_s = throughput(target, transport, 1).await;
    settle(target, transport).await;
    latency(target, transport, &mut r).await;
    r
}

/// Waits (bounded) until subcar counts no open `transport` connection. A
/// stream has no client→server messages: subcar sees a closed one when a
/// write fails, so a phase's streams could otherwise still be taking
/// deliveries (and memory) in the next phase.
pub async fn settle(target: &Target, transport: Transport) {
    let Some(admin) = target.admin() else { return };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open = connections(admin, transport).await;
        if open == 0 {
            return;
        }
        if Instant::now() > deadline {
            eprintln!(
                "warning: {open} {} connections still open",
                transport.name()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `subcar_connections{transport=…}` from the admin listener.
async fn connections(admin: SocketAddr, transport: Transport) -> u64 {
    let mut stream = TcpStream::connect(admin).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    let key = format!("subcar_connections{{transport=\"{}\"}} ", transport.label());
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key:?} in /metrics"))
}

/// One row: its name, how to read it from a run, and issue 16's target
/// for the ratio to WebSocket (`≥` when higher is better).
struct Metric {
    name: String,
    get: fn(&Results) -> f64,
    target: Option<(&'static str, f64)>,
}

fn metrics() -> Vec<Metric> {
    let (a, b, d) = (scale(10_000), scale(1_000), scale(100));
    let m = |name: String, get: fn(&Results) -> f64, target| Metric { name, get, target };
    vec![
        m(
            format!("(a) fan-out 1 event -> {a}, p50 ms"),
            |r| r.fanout_p50_ms,
            None,
        ),
        m(
            format!("(a) fan-out 1 event -> {a}, p99 ms"),
            |r| r.fanout_p99_ms,
            None,
        ),
        m(
            format!("(b) deliveries/s, {b} subscribers, batches of 100"),
            |r| r.batched_per_s,
            Some((">=", 0.8)),
        ),
        m(
            format!("(b) deliveries/s, {b} subscribers, one event per publish"),
            |r| r.unbatched_per_s,
            Some((">=", 0.8)),
        ),
        m(
            format!("(c) RSS per idle stream at {a}, KiB"),
            |r| r.rss_per_conn_kib,
            Some(("<=", 1.2)),
        ),
        m(
            format!("(d) latency p50 us (1k events/s, {d} subscribers)"),
            |r| r.lat_p50_us,
            None,
        ),
        m(
            format!("(d) latency p99 us (1k events/s, {d} subscribers)"),
            |r| r.lat_p99_us,
            Some(("<=", 1.2)),
        ),
    ]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn print(transports: &[Transport], results: &[Vec<Results>]) {
    let rounds = results[0].len();
    let ws = transports.iter().position(|t| *t == Transport::Ws);
    let others: Vec<usize> = (0..transports.len()).filter(|&i| Some(i) != ws).collect();
    println!(
        "\ntransports (subcar, a fresh process per transport and round; median of {rounds} rounds, order alternating)"
    );
    let mut head = format!("{:<58}", "metric");
    for t in transports {
        head += &format!(" {:>12}", t.name());
    }
    if ws.is_some() {
        for &i in &others {
            head += &format!(" {:>13}", format!("{}/ws", transports[i].name()));
        }
    }
    println!("{head}");
    let mut misses = Vec::new();
    for metric in metrics() {
        let medians: Vec<f64> = results
            .iter()
            .map(|runs| median(runs.iter().map(metric.get).collect()))
            .collect();
        let mut line = format!("{:<58}", metric.name);
        for m in &medians {
            line += &format!(" {m:>12.2}");
        }
        if let Some(ws) = ws {
            for &i in &others {
                let ratio = medians[i] / medians[ws];
                line += &format!(" {ratio:>13.2}");
                if let Some((op, bound)) = metric.target {
                    let met = if op == ">=" {
                        ratio >= bound
                    } else {
                        ratio <= bound
                    };
                    if !met {
                        misses.push(format!(
                            "{} {}: {ratio:.2}x, target {op} {bound}x",
                            transports[i].name(),
                            metric.name
                        ));
                    }
                }
            }
        }
        println!("{line}");
    }
    if ws.is_some() && !others.is_empty() {
        if misses.is_empty() {
            println!("targets (ratios to ws of the medians): all met");
        } else {
            for m in &misses {
                println!("target missed: {m}");
            }
        }
    }
    println!(
        "\nevery round (transport: a p50/p99 ms | b batched, unbatched /s | c KiB | d p50/p99 us)"
    );
    for round in 0..rounds {
        for (t, runs) in transports.iter().zip(results) {
            let r = &runs[round];
            println!(
                "round {} {:>9}: {:.1}/{:.1} | {:.0}, {:.0} | {:.2} | {:.0}/{:.0}",
                round + 1,
                t.name(),
                r.fanout_p50_ms,
                r.fanout_p99_ms,
                r.batched_per_s,
                r.unbatched_per_s,
                r.rss_per_conn_kib,
                r.lat_p50_us,
                r.lat_p99_us
            );
        }
    }
}
