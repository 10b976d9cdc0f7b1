//! Proxy overhead: the same upstream called directly, through subcar,
//! through a bare hyper proxy (the floor any proxy built on hyper reaches
//! here) and through nginx (what many would put there instead; Debian
//! package `nginx`, its columns stay empty without it), on the same machine
//! in the same run. Two upstreams: a trivial one
//! (answers at once) and a realistic one (≈1 ms of work per request, as a
//! database round trip would take).
//!
//! A second table measures what a `[[triggers]]` entry costs a mutation:
//! the same mutations (a distinct one per request, so every answer
//! publishes a new event) sent directly, through subcar without triggers,
//! and through subcar with a trigger on the mutation's field.
//!
//! Run: `cargo bench --bench proxy` (env `BENCH_SECONDS`, default 5, sets the
//! measuring time per target and cell; `PROXY_BENCH_ONLY=trivial:64` runs
//! one cell, for profiling; `PROXY_BENCH_TABLE=queries` or `=triggers` one
//! of the two tables). subcar and the bare proxy run as child
//! processes (release builds); the upstream and the load generator share
//! this process, on separate single-threaded runtimes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const CONCURRENCIES: [usize; 3] = [1, 16, 64];
const QUERY: &str = r#"{"query":"{ incident(id: \"42\") { id title severity } }"}"#;
const ANSWER: &str =
    r#"{"data":{"incident":{"id":"42","title":"Database latency","severity":"P1"}}}"#;
const MUTATION_ANSWER: &str = r#"{"data":{"updateIncident":{"id":"42","severity":"P1"}}}"#;
/// The trigger of the second table, and the subscription field its topic feeds.
const TRIGGER: &str = "[[subscriptions]]\nfield = \"incidentUpdated\"\ntopic = \"incident.updated\"\n\
     [[triggers]]\nmutation = \"updateIncident\"\ntopic = \"incident.updated\"\n\
     payload = \"{'id': args.id, 'severity': result.severity}\"\n";

/// What the load generator sends: request `n` of a connection.
#[derive(Clone, Copy)]
enum Sent {
    Query,
    /// A mutation of incident `n`: a distinct request, so a distinct event.
    Mutation,
}

impl Sent {
    fn body(self, n: u64) -> Bytes {
        match self {
            Self::Query => Bytes::from_static(QUERY.as_bytes()),
            Self::Mutation => Bytes::from(format!(
                r#"{{"query":"mutation {{ updateIncident(id: \"{n}\", severity: P1) {{ id severity }} }}"}}"#
            )),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--bare-proxy") {
        return bare::serve(args[i + 1].parse().unwrap(), args[i + 2].parse().unwrap());
    }
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let measure = Duration::from_secs(seconds);
    let upstream_rt = runtime();
    let trivial = upstream_rt.block_on(start_upstream(Duration::ZERO));
    let realistic = upstream_rt.block_on(start_upstream(Duration::from_millis(1)));

    let nginx_found = nginx::available();
    if !nginx_found {
        eprintln!("nginx not found (Debian: apt-get install nginx): its columns stay empty");
    }
    println!(
        "| upstream | concurrency | direct req/s | via subcar req/s | ratio | bare hyper proxy req/s | ratio | subcar / bare | nginx req/s | subcar / nginx | direct p50 / p99 (µs) | subcar p50 / p99 (µs) | added p50 (µs) | bare proxy p50 / p99 (µs) | nginx p50 / p99 (µs) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let only = std::env::var("PROXY_BENCH_ONLY").ok();
    let selected = |name: &str, concurrency: usize| {
        only.as_deref().is_none_or(|o| {
            o.split_once(':')
                .is_some_and(|(n, c)| name.starts_with(n) && c == concurrency.to_string())
        })
    };
    let load_rt = runtime();
    let table = std::env::var("PROXY_BENCH_TABLE").ok();
    let upstreams = [("trivial", trivial), ("realistic (1 ms)", realistic)];
    for (name, upstream) in upstreams {
        if table.as_deref().is_some_and(|t| t != "queries") {
            break;
        }
        if !CONCURRENCIES.iter().any(|&c| selected(name, c)) {
            continue;
        }
        let mut subcar = spawn_subcar(upstream, "");
        let via = subcar.addr;
        eprintln!("subcar pid {} (for `perf record -p`)", subcar.child.id());
        let bare_addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut bare = Command::new(std::env::current_exe().unwrap())
            .args([
                "--bare-proxy",
                &bare_addr.to_string(),
                &upstream.to_string(),
            ])
            .spawn()
            .expect("the bare proxy starts");
        let nginx = nginx_found.then(|| nginx::spawn(upstream));
        load_rt.block_on(wait_until_up(via));
        load_rt.block_on(wait_until_up(bare_addr));
        let mut targets = vec![upstream, via, bare_addr];
        if let Some(n) = &nginx {
            load_rt.block_on(wait_until_up(n.addr));
            targets.push(n.addr);
        }
        for &concurrency in CONCURRENCIES.iter().filter(|&&c| selected(name, c)) {
            let mut results = load_rt
                .block_on(compare(&targets, Sent::Query, concurrency, measure))
                .into_iter();
            let (direct, proxied, floor) = (
                results.next().unwrap(),
                results.next().unwrap(),
                results.next().unwrap(),
            );
            let (nginx_rps, nginx_ratio, nginx_lat) = match results.next() {
                Some(n) => (
                    format!("{:.0}", n.rps),
                    format!("{:.2}", proxied.rps / n.rps),
                    format!("{} / {}", n.p50, n.p99),
                ),
                None => Default::default(),
            };
            println!(
                "| {name} | {concurrency} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {nginx_rps} | {nginx_ratio} | {} / {} | {} / {} | {} | {} / {} | {nginx_lat} |",
                direct.rps,
                proxied.rps,
                proxied.rps / direct.rps,
                floor.rps,
                floor.rps / direct.rps,
                proxied.rps / floor.rps,
                direct.p50,
                direct.p99,
                proxied.p50,
                proxied.p99,
                proxied.p50 as i64 - direct.p50 as i64,
                floor.p50,
                floor.p99,
            );
        }
        for child in [&mut subcar.child, &mut bare] {
            child.kill().ok();
            child.wait().ok();
        }
        drop(nginx);
    }
    if table.as_deref().is_none_or(|t| t == "triggers") {
        triggers(&load_rt, upstreams, &selected, measure);
    }
    drop(upstream_rt);
}

/// The second table: mutations without and with a trigger.
fn triggers(
    load_rt: &tokio::runtime::Runtime,
    upstreams: [(&str, SocketAddr); 2],
    selected: &dyn Fn(&str, usize) -> bool,
    measure: Duration,
) {
    println!();
    println!(
        "| upstream | concurrency | direct req/s | subcar req/s | subcar + trigger req/s | ratio | direct p50 / p99 (µs) | subcar p50 / p99 (µs) | subcar + trigger p50 / p99 (µs) | trigger added p50 (µs) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, upstream) in upstreams {
        if !CONCURRENCIES.iter().any(|&c| selected(name, c)) {
            continue;
        }
        let mut plain = spawn_subcar(upstream, "");
        let mut triggered = spawn_subcar(upstream, TRIGGER);
        load_rt.block_on(wait_until_up(plain.addr));
        load_rt.block_on(wait_until_up(triggered.addr));
        for &concurrency in CONCURRENCIES.iter().filter(|&&c| selected(name, c)) {
            let [direct, without, with]: [Summary; 3] = load_rt
                .block_on(compare(
                    &[upstream, plain.addr, triggered.addr],
                    Sent::Mutation,
                    concurrency,
                    measure,
                ))
                .try_into()
                .unwrap_or_else(|_| unreachable!("one summary per target"));
            println!(
                "| {name} | {concurrency} | {:.0} | {:.0} | {:.0} | {:.2} | {} / {} | {} / {} | {} / {} | {} |",
                direct.rps,
                without.rps,
                with.rps,
                with.rps / without.rps,
                direct.p50,
                direct.p99,
                without.p50,
                without.p99,
                with.p50,
                with.p99,
                with.p50 as i64 - without.p50 as i64,
            );
        }
        for s in [&mut plain, &mut triggered] {
            s.child.kill().ok();
            s.child.wait().ok();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

async fn start_upstream(work: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let mutation = body.is_ok_and(|b| b.starts_with(b"{\"query\":\"mutation"));
                        if !work.is_zero() {
                            tokio::time::sleep(work).await;
                        }
                        let answer = if mutation { MUTATION_ANSWER } else { ANSWER };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from_static(answer.as_bytes())))
                                .unwrap(),
                        )
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

struct Subcar {
    child: Child,
    addr: SocketAddr,
    _dir: std::path::PathBuf,
}

/// A bench that panics mid-run still stops its subcar.
impl Drop for Subcar {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A subcar process in front of `upstream` with `extra` configuration.
fn spawn_subcar(upstream: SocketAddr, extra: &str) -> Subcar {
    let port = |_| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (public, admin, webhook) = (port(0), port(1), port(2));
    let dir = std::env::temp_dir().join(format!("subcar-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join(format!("subcar-{public}.toml"));
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/schema.graphql");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{public}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [webhook]\nlisten = \"127.0.0.1:{webhook}\"\n[upstream]\nurl = \"http://{upstream}/graphql\"\n\
             [schema]\npath = \"{schema}\"\nintrospect_upstream = false\n[log]\nfilter = \"warn\"\n{extra}"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_subcar"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .spawn()
        .expect("subcar starts");
    Subcar {
        child,
        addr: ([127, 0, 0, 1], public).into(),
        _dir: dir,
    }
}

async fn wait_until_up(addr: SocketAddr) {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("subcar did not start on {addr}");
}

struct Summary {
    rps: f64,
    p50: u64,
    p99: u64,
}

/// Latencies of several slices of one target, merged.
#[derive(Default)]
struct Samples {
    latencies: Vec<u64>,
    elapsed: Duration,
}

impl Samples {
    fn summary(mut self) -> Summary {
        let all = &mut self.latencies;
        all.sort_unstable();
        let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
        Summary {
            rps: all.len() as f64 / self.elapsed.as_secs_f64(),
            p50: pct(0.50),
            p99: pct(0.99),
        }
    }
}

/// Slices per cell: the targets take turns, so that the machine's drift
/// over a run (it is shared) falls on all of them alike.
const ROUNDS: u32 = 5;

/// Measures `targets` for `measure` each, in `ROUNDS` alternating slices.
async fn compare(
    targets: &[SocketAddr],
    sent: Sent,
    concurrency: usize,
    measure: Duration,
) -> Vec<Summary> {
    let mut samples: Vec<Samples> = targets.iter().map(|_| Samples::default()).collect();
    for _ in 0..ROUNDS {
        for (addr, samples) in targets.iter().zip(samples.iter_mut()) {
            load(*addr, sent, concurrency, measure / ROUNDS, samples).await;
        }
    }
    samples.into_iter().map(Samples::summary).collect()
}

/// `concurrency` keep-alive connections, each sending requests back to back
/// for a short warm-up and then for `measure`.
async fn load(
    addr: SocketAddr,
    sent: Sent,
    concurrency: usize,
    measure: Duration,
    samples: &mut Samples,
) {
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..concurrency as u64 {
        let (recording, stop) = (recording.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut latencies = Vec::with_capacity(100_000);
            // Distinct across workers and slices of the run.
            let mut n = nanos().wrapping_add(worker << 48);
            while !stop.load(Ordering::Relaxed) {
                n = n.wrapping_add(1);
                let request = Request::post(format!("http://{addr}/graphql"))
                    .header("host", addr.to_string())
                    .header("content-type", "application/json")
                    .body(Full::new(sent.body(n)))
                    .unwrap();
                let started = Instant::now();
                let response = sender
                    .send_request(request)
                    .await
                    .expect("request answered");
                assert!(response.status().is_success(), "{}", response.status());
                let _ = response.into_body().collect().await.unwrap();
                if recording.load(Ordering::Relaxed) {
                    latencies.push(started.elapsed().as_micros() as u64);
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(measure).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        samples.latencies.extend(w.await.unwrap());
    }
    samples.elapsed += elapsed;
}

fn nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The floor a proxy on hyper can reach: a hyper server whose every request
/// goes to the upstream through hyper-util's pooled client, nothing else.
mod bare {
    use super::*;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;

    pub fn serve(listen: SocketAddr, upstream: SocketAddr) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(accept(listen, upstream));
    }

    async fn accept(listen: SocketAddr, upstream: SocketAddr) {
        let listener = TcpListener::bind(listen).await.unwrap();
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<_, hyper::body::Incoming> =
            Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
        let uri: http::Uri = format!("http://{upstream}/graphql").parse().unwrap();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (client, uri) = (client.clone(), uri.clone());
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                        *req.uri_mut() = uri.clone();
                        req.headers_mut().remove(http::header::HOST);
                        client.request(req)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }
}

/// nginx as a reverse proxy with keep-alive to the upstream, two workers
/// (one per core, as subcar's runtime has), access log off. Its default
/// `keepalive_requests` (1,000) would close the load generator's
/// connections mid-run; the bench's clients keep theirs for the whole run.
mod nginx {
    use super::*;

    pub struct Nginx {
        pub child: Child,
        pub addr: SocketAddr,
        _dir: tempfile::TempDir,
    }

    fn binary() -> Option<std::path::PathBuf> {
        ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.exists())
    }

    pub fn available() -> bool {
        binary().is_some()
    }

    pub fn spawn(upstream: SocketAddr) -> Nginx {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let config = format!(
            "daemon off;\nworker_processes 2;\nerror_log stderr warn;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
               upstream api {{ server {upstream}; keepalive 128; keepalive_requests 100000000; }}\n\
               keepalive_requests 100000000;\n  keepalive_timeout 600s;\n\
               server {{\n    listen {addr};\n    location / {{\n      proxy_pass http://api;\n\
                   proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(binary().unwrap())
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx starts");
        Nginx {
            child,
            addr,
            _dir: dir,
        }
    }

    impl Drop for Nginx {
        fn drop(&mut self) {
            // SIGTERM to the master stops its workers too (SIGKILL would
            // leave them running).
            // SAFETY: kill(2) on the pid of a child this process spawned.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            self.child.wait().ok();
        }
    }
}
