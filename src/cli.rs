//! Command-line interface.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// subcar adds GraphQL subscriptions to an existing GraphQL API.
///
/// It runs beside the API: queries and mutations are proxied to the API
/// unchanged, subscriptions (graphql-ws over WebSocket) are served by subcar,
/// and the API feeds them by POSTing events to subcar's webhook.
#[derive(Debug, Parser)]
#[command(name = "subcar", version, propagate_version = true)]
pub struct Cli {
    /// The TOML configuration file (see config.example.toml).
    #[arg(
        long,
        short = 'c',
        env = "SUBCAR_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run subcar (the default when no command is given).
    Run,
    /// Validate the configuration and schema, then check that the upstream
    /// and the bus answer. Exit code 0: all good; 1: configuration or schema
    /// invalid; 2: valid, but the upstream did not answer; 3: the upstream
    /// answered, but the bus (Redis or NATS) did not.
    Check,
    /// Print the merged schema (upstream types plus subcar's Subscription
    /// root) as SDL.
    Schema,
    /// Write a commented starting configuration (subcar.toml) and a
    /// subscription schema with an example field to edit (schema.graphql)
    /// for an upstream GraphQL API. Existing files are kept unless --force.
    /// Needs no --config.
    Init {
        /// The existing GraphQL API, e.g. http://127.0.0.1:8080/graphql.
        #[arg(long, value_name = "URL")]
        upstream: String,
        /// The directory to write into (created if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Overwrite subcar.toml and schema.graphql if they exist.
        #[arg(long)]
        force: bool,
    },
}

impl Cli {
    pub fn config_path(&self) -> Result<&PathBuf, &'static str> {
        self.config
            .as_ref()
            .ok_or("no configuration file: pass --config FILE or set SUBCAR_CONFIG")
    }
}
