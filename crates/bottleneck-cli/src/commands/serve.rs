//! `bottleneck serve`: a model over HTTP (the service lives in `bottleneck-serve`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use bottleneck::Device;
use bottleneck_serve::{ServeConfig, default_workers};
use clap::Args;

use crate::progress::Bars;

#[derive(Args)]
pub struct ServeArgs {
    /// Model file written by `train` (images, table, audio, or a denoiser of either).
    model: PathBuf,
    /// Address to listen on (port 0 picks a free port, printed at start).
    #[arg(long, default_value_t = ServeConfig::default().addr)]
    addr: String,
    /// Inference threads, each with its own copy of the model [default: one per core, at
    /// most 8].
    #[arg(long)]
    workers: Option<usize>,
    /// Requests that may wait for a worker; beyond that the service answers 503 at once.
    #[arg(long, default_value_t = ServeConfig::default().queue)]
    queue: usize,
    /// Largest request body in MiB (413 above).
    #[arg(long, default_value_t = ServeConfig::default().max_body >> 20)]
    max_body_mb: usize,
    /// Longest time in seconds a request may take, upload included (504 above).
    #[arg(long, default_value_t = ServeConfig::default().timeout.as_secs_f64())]
    timeout: f64,
    /// Most table rows in one request (413 above).
    #[arg(long, default_value_t = ServeConfig::default().max_rows)]
    max_rows: usize,
    /// File holding a bearer token that every request but /healthz and /readyz must carry
    /// (`Authorization: Bearer TOKEN`). Use it, and TLS in front, when binding beyond
    /// localhost.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// An origin (`https://app.example.com`) whose pages may call the service from a
    /// browser; repeat for more. None by default.
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    /// Most connections open at once; beyond it new ones are closed at once [default: the
    /// open-file limit less a reserve, at most 10,000].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Slowest upload accepted in bytes per second after the first two seconds (408
    /// below): slow clients cannot hold the service's memory or its places.
    #[arg(long, default_value_t = ServeConfig::default().min_upload_rate)]
    min_upload_rate: u64,
    /// MiB of request bodies held at once, being read or waiting for a worker (503
    /// beyond; at least --max-body-mb).
    #[arg(long, default_value_t = ServeConfig::default().upload_budget >> 20)]
    upload_budget_mb: usize,
}

pub fn run(args: ServeArgs, device: &Device, _bars: &Bars) -> Result<()> {
    let ServeArgs {
        model,
        addr,
        workers,
        queue,
        max_body_mb,
        timeout,
        max_rows,
        token_file,
        cors_origins,
        max_connections,
        min_upload_rate,
        upload_budget_mb,
    } = args;
    if max_connections == Some(0) {
        anyhow::bail!("--max-connections must be at least 1");
    }
    if max_rows == 0 {
        anyhow::bail!("--max-rows must be at least 1");
    }
    let token = match token_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("--token-file {}", path.display()))?;
            let token = text.trim().to_string();
            if token.len() < 16 || token.chars().any(char::is_whitespace) {
                anyhow::bail!(
                    "--token-file {}: the token must be one word of at least 16 characters",
                    path.display()
                );
            }
            Some(token)
        }
    };
    let timeout = std::time::Duration::try_from_secs_f64(timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .with_context(|| {
            format!("--timeout must be a positive number of seconds, got {timeout}")
        })?;
    let max_body = max_body_mb
        .checked_mul(1 << 20)
        .filter(|&b| b > 0)
        .with_context(|| format!("--max-body-mb {max_body_mb} is out of range"))?;
    if queue == 0 {
        anyhow::bail!("--queue must be at least 1");
    }
    let config = ServeConfig {
        addr,
        workers: workers.unwrap_or_else(default_workers).max(1),
        queue,
        max_body,
        timeout,
        max_rows,
        token,
        cors_origins,
        max_connections,
        min_upload_rate,
        upload_budget: upload_budget_mb.saturating_mul(1 << 20).max(max_body),
    };
    let workers = config.workers;
    // Serving prints its address and notices whatever --quiet says: it is the only
    // way to learn the port when port 0 was asked for.
    bottleneck_serve::serve(
        &model,
        &config,
        device,
        |addr, served| {
            eprintln!(
                "serving {} ({served:?}, {workers} worker{}) on http://{addr}",
                model.display(),
                if workers == 1 { "" } else { "s" }
            )
        },
        |notice| eprintln!("{notice}"),
    )?;
    Ok(())
}
