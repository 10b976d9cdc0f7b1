//! Process edge: arguments, logging, configuration, run, exit code.

use std::process::ExitCode;

use clap::Parser;
use subcar::app::App;
use subcar::cli::{Cli, Command};
use subcar::config::{Config, LogFormat};
use subcar::shutdown::{self, Shutdown};

/// Exit codes of `subcar check`, documented in `--help`.
const EXIT_INVALID: u8 = 1;
const EXIT_UPSTREAM_DOWN: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    init_tracing(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Run) {
            Command::Run => run(config).await,
            Command::Check => check(config).await,
            Command::Schema => schema(config).await,
        }
    })
}

async fn run(config: Config) -> ExitCode {
    let bound = match App::build(config) {
        Ok(app) => match app.learn_upstream_schema().await {
            Ok(()) => app.bind().await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let bound = match bound {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("subcar: {e:#}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let shutdown = Shutdown::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown::signal().await;
        trigger.trigger();
    });
    bound.run(shutdown).await;
    ExitCode::SUCCESS
}

async fn check(config: Config) -> ExitCode {
    let url = config.upstream.url.to_string();
    let app = match App::build(config) {
        Ok(app) => app,
        Err(e) => {
            eprintln!("subcar: {e:#}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    println!("configuration: ok");
    if let Err(e) = app.learn_upstream_schema().await {
        eprintln!("subcar: {e:#}");
        return ExitCode::from(EXIT_INVALID);
    }
    println!(
        "schema: ok (upstream part: {:?})",
        app.schema().upstream_part()
    );
    match app.upstream().probe().await {
        Ok(()) => {
            println!("upstream {url}: reachable");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!(
                "upstream {url}: NOT reachable: {}",
                subcar::health::error_chain(&e)
            );
            ExitCode::from(EXIT_UPSTREAM_DOWN)
        }
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
    if app.schema().upstream_part() == subcar::schema::UpstreamPart::Pending {
        eprintln!(
            "subcar: warning: the upstream did not answer introspection; printing the subscription schema alone"
        );
    }
    print!("{}", app.schema().current().sdl());
    ExitCode::SUCCESS
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
