//! Process edge: arguments, logging, configuration, run, exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use subcar::admin::reload::{LogFilter, Reload};
use subcar::app::App;
use subcar::cli::{Cli, Command};
use subcar::config::{Config, LogFormat};
use subcar::shutdown::{self, Shutdown};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

/// Fan-out allocates and frees a frame per subscriber per event from
/// several threads; glibc's allocator spends a third of the dispatch time
/// on that (`malloc_consolidate`), mimalloc's thread-local heaps do not.
/// The `system-allocator` feature leaves it out for heap profilers.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit codes of `subcar check`, documented in `--help`.
const EXIT_INVALID: u8 = 1;
const EXIT_UPSTREAM_DOWN: u8 = 2;
const EXIT_BUS_DOWN: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Init {
        upstream,
        out,
        force,
    }) = &cli.command
    {
        return init(upstream, out, *force);
    }
    let config = match cli
        .config_path()
        .map_err(|e| anyhow::anyhow!(e))
        .and_then(|path| {
            Config::load(path, std::env::vars())
                .map_err(|e| anyhow::anyhow!("invalid configuration in {}:\n{e}", path.display()))
        }) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("subcar: {e:#}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let log_filter = init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => run(config, cli.config.clone(), log_filter).await,
            Command::Check => check(config).await,
            Command::Schema => schema(config).await,
            // Dispatched above, before a configuration is needed.
            Command::Init {
                upstream,
                out,
                force,
            } => init(&upstream, &out, force),
        }
    })
}

async fn run(config: Config, path: Option<PathBuf>, log_filter: LogFilter) -> ExitCode {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    // Listening for SIGHUP before anything is bound: one sent as soon as
    // the process is ready must reload, not terminate it.
    let reload = path.map(|path| Reload::new(path, config.clone(), log_filter));
    let bound = match App::build(config) {
        Ok(app) => {
            for warning in app.warnings() {
                tracing::warn!("{warning}");
            }
            match app.learn_upstream_schema().await {
                Ok(()) => app.bind().await,
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let bound = match bound {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("subcar: {e:#}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let bound = match reload {
        Some(reload) => bound.reload_on_sighup(reload),
        None => bound,
    };
    let shutdown = Shutdown::new();
    let stop_on_signal = async {
        shutdown::signal().await;
        shutdown.trigger();
    };
    tokio::join!(bound.run(shutdown.clone()), stop_on_signal);
    ExitCode::SUCCESS
}

async fn check(config: Config) -> ExitCode {
    let url = config.upstream.url.to_string();
    for warning in config.warnings() {
        println!("warning: {warning}");
    }
    let app = match App::build(config) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("subcar: {e:#}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    for warning in app.warnings() {
        println!("warning: {warning}");
    }
    println!("configuration: ok");
    if let Err(e) = app.learn_upstream_schema().await {
        eprintln!("subcar: {e:#}");
        return ExitCode::from(EXIT_INVALID);
    }
    println!(
        "schema: ok (upstream part: {:?})",
        app.schema().upstream_part()
    );
    let upstream_up = match app.upstream().probe().await {
        Ok(()) => {
            println!("upstream {url}: reachable");
            true
        }
        Err(e) => {
            println!(
                "upstream {url}: NOT reachable: {}",
                subcar::log::error_chain(&e)
            );
            false
        }
    };
    let kind = app.bus().kind();
    let bus_up = match app.bus().check().await {
        Ok(()) => {
            println!("bus ({kind}): reachable");
            true
        }
        Err(e) => {
            println!("bus ({kind}): NOT reachable: {e}");
            false
        }
    };
    match (upstream_up, bus_up) {
        (false, _) => ExitCode::from(EXIT_UPSTREAM_DOWN),
        (true, false) => ExitCode::from(EXIT_BUS_DOWN),
        (true, true) => ExitCode::SUCCESS,
    }
}

async fn schema(config: Config) -> ExitCode {
    let app = match App::build(config) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("subcar: {e:#}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    if let Err(e) = app.learn_upstream_schema().await {
        eprintln!("subcar: {e:#}");
        return ExitCode::from(EXIT_INVALID);
    }
    if app.schema().upstream_part() == subcar::proxy::schema::UpstreamPart::Pending {
        eprintln!(
            "subcar: warning: the upstream did not answer introspection; printing the subscription schema alone"
        );
    }
    print!("{}", app.schema().current().sdl());
    ExitCode::SUCCESS
}

/// `subcar init`: needs no configuration (it writes one).
fn init(upstream: &str, out: &std::path::Path, force: bool) -> ExitCode {
    match subcar::init::write(upstream, out, force) {
        Ok(written) => {
            for path in &written {
                println!("wrote {}", path.display());
            }
            println!(
                "next: edit the example subscription in {}, then run `subcar check --config {}`",
                written[1].display(),
                written[0].display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("subcar: init: {:#}", anyhow::Error::from(e));
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// Installs logging: text or JSON on stderr, filtered by `RUST_LOG` or
/// `log.filter`. The returned handle swaps the filter on SIGHUP.
fn init_tracing(config: &Config) -> LogFilter {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(config.log.directives()));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter);
    let json = config.log.format == LogFormat::Json;
    // Colours only for a terminal: log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text_layer = (!json).then(|| fmt::layer().with_ansi(ansi).with_writer(std::io::stderr));
    let json_layer = json.then(|| {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(text_layer)
        .with(json_layer)
        .init();
    handle
}
