#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::LazyLock;

use clap::{Parser, Subcommand};
use permaproxy::commands;
use permaproxy::config::{settings, Config};

/// mimalloc instead of glibc malloc: per-thread free lists without arena
/// locks, and freed pages kept for reuse instead of unmapped and faulted in
/// again (BENCHMARKS.md, "What each change bought").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

static SETTINGS_HELP: LazyLock<String> = LazyLock::new(settings::help_text);

#[derive(Parser)]
#[command(
    name = "permaproxy",
    version,
    about = "A reverse proxy that turns short-lived Replicate image URLs into permanent hosted URLs",
    after_help = SETTINGS_HELP.as_str()
)]
struct Cli {
    /// TOML file with settings (environment variables override it)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default)
    Serve,
    /// Run the whole flow locally, with a stand-in Studio API and Replicate host
    Demo,
    /// Validate the configuration and print the effective one, secrets redacted
    CheckConfig,
    /// Ask the local public listener's /__permaproxy/healthz; exit 0 on a 200
    /// (a container HEALTHCHECK: the image has no curl)
    Health {
        /// Give up after this many seconds
        #[arg(long, default_value_t = 3, value_name = "SECS")]
        timeout: u64,
    },
    /// Apply the retention, per-user and disk-cap rules to the store now
    Cleanup {
        /// Print what would be deleted and why, and change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Rebuild the database from the store (sidecars on disk, object metadata on S3)
    Reindex,
    /// Copy every image and its metadata from IMAGE_STORAGE_PATH to the S3 bucket
    Migrate {
        /// Where to copy to (only `s3`)
        #[arg(long, value_name = "BACKEND")]
        to: String,
        /// Print what would be copied, and copy nothing
        #[arg(long)]
        dry_run: bool,
    },
}

fn load(path: Option<&PathBuf>, extra: &[(String, String)]) -> Result<Config, String> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    // Demo settings go under the environment's, so a user can still
    // override any of them.
    let mut layered = extra.to_vec();
    layered.append(&mut env);
    Config::load_from(path.map(PathBuf::as_path), &layered).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => load(cli.config.as_ref(), &[]).and_then(|cfg| {
            permaproxy::logging::init(cfg.log_format);
            permaproxy::server::run(cfg)
        }),
        Command::Demo => permaproxy::demo::start_stand_ins()
            .and_then(|extra| load(cli.config.as_ref(), &extra))
            .and_then(|cfg| {
                permaproxy::demo::init_logging(cfg.log_format)?;
                permaproxy::server::run(cfg)
            }),
        Command::CheckConfig => load(cli.config.as_ref(), &[]).map(|cfg| {
            println!("# configuration is valid\n{}", cfg.describe());
        }),
        Command::Health { timeout } => load(cli.config.as_ref(), &[]).and_then(|cfg| {
            let timeout = std::time::Duration::from_secs(timeout.max(1));
            permaproxy::health::check(&cfg, timeout).map_err(|e| e.to_string())
        }),
        Command::Cleanup { dry_run } => load(cli.config.as_ref(), &[]).and_then(|cfg| {
            permaproxy::logging::init(cfg.log_format);
            commands::cleanup(cfg, dry_run)
        }),
        Command::Reindex => load(cli.config.as_ref(), &[]).and_then(|cfg| {
            permaproxy::logging::init(cfg.log_format);
            commands::reindex(cfg)
        }),
        Command::Migrate { to, dry_run } => load(cli.config.as_ref(), &[]).and_then(|cfg| {
            permaproxy::logging::init(cfg.log_format);
            commands::migrate(cfg, &to, dry_run)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("permaproxy: {message}");
            ExitCode::FAILURE
        }
    }
}
