//! The `tidewire` binary: parse the command line, load the config, run.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tidewire::cli::{Cli, Command, ServeArgs};
use tidewire::{Config, Server, client, demo};
use tokio_util::sync::CancellationToken;

/// After a shutdown signal, the process exits by this deadline even if
/// something hangs (SPEC: at most 5 s).
const SHUTDOWN_DEADLINE: Duration = Duration::from_millis(4800);

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Some(Command::CheckConfig { file }) => match file.or(cli.serve.config) {
            Some(file) => check_config(&file),
            None => Err(anyhow::anyhow!(
                "check-config needs a file: tidewire check-config FILE"
            )),
        },
        Some(Command::Serve) | None => serve(&cli.serve),
        Some(Command::Pub(args)) => client(async move { Ok(client::publish(&args).await?) }),
        Some(Command::Sub(args)) => {
            client(
                async move { Ok(client::subscribe(&args, &mut std::io::stdout().lock()).await?) },
            )
        }
        Some(Command::HashPassword) => hash_password(),
        Some(Command::Demo(args)) => client(async move {
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            demo::run(args.settings(), shutdown).await;
            Ok(())
        }),
        Some(Command::Sql(args)) => client(async move {
            let text = tidewire_sql::cli::run_sql(&args.url, args.format, &args.sql).await?;
            print!("{text}");
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidewire: {e}");
            ExitCode::FAILURE
        }
    }
}

fn client(work: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(work)
}

fn hash_password() -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    println!(
        "{}",
        tidewire_auth::hash_password(password).map_err(anyhow::Error::msg)?
    );
    Ok(())
}

fn check_config(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::check_file(file)?;
    println!(
        "{}: ok ({} stream{})",
        file.display(),
        config.streams.len(),
        if config.streams.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.overrides())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let server = Server::start(config).await?;
        println!("mqtt listening on {}", server.mqtt_addr());
        if let Some(addr) = server.mqtts_addr() {
            println!("mqtts listening on {addr}");
        }
        println!("http listening on {}", server.http_addr());
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        tokio::spawn(reload_on_hangup(server.reloader()));
        if args.demo {
            tokio::spawn(demo::run(
                demo_settings(server.mqtt_addr()),
                shutdown.clone(),
            ));
        }
        server.run(shutdown).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// The `--demo` devices of a server listening for MQTT on `addr`.
fn demo_settings(addr: std::net::SocketAddr) -> demo::DemoSettings {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    demo::DemoSettings {
        host,
        port: addr.port(),
        devices: demo::DEFAULT_DEVICES,
        interval: demo::DEFAULT_INTERVAL,
        credentials: None,
    }
}

/// Reloads the config file on every SIGHUP.
async fn reload_on_hangup(reloader: tidewire::reload::Reloader) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload with POST /api/v1/admin/reload");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the config file");
        let reloader = reloader.clone();
        let _ = tokio::task::spawn_blocking(move || reloader.reload_logged()).await;
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM, then enforces the deadline.
async fn stop_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
    shutdown.cancel();
    tokio::time::sleep(SHUTDOWN_DEADLINE).await;
    tracing::error!("shutdown did not finish in time; exiting");
    std::process::exit(1);
}
