//! The command line: `quorumdb start` runs one node, `quorumdb demo` a local 3-node cluster.
//! The client commands are `quorumdb-client`'s, parsed here and run there: `quorumdb load`
//! loads a file into a running cluster, `quorumdb backup` / `quorumdb restore` write a
//! cluster's tables to Arrow files and load them back, `quorumdb shell` is the interactive SQL
//! client ([`quorumdb_client::shell`]). `quorumdb cert` makes a cluster CA and the node and
//! client certificates it signs ([`crate::tls::certs`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{NodeConfig, StartArgs};
use crate::demo::DemoArgs;
use crate::node::Node;

#[derive(Parser)]
#[command(name = "quorumdb", version, about = "A distributed SQL + vector database on Raft")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run one node.
    Start(StartArgs),
    /// Run a local 3-node cluster with sample data until Ctrl-C.
    Demo(DemoArgs),
    /// Load a CSV, Parquet, JSON-lines or vector (.fvecs/.npy) file into a running cluster.
    Load(quorumdb_client::load_command::LoadArgs),
    /// Write every table, at one consistent point, as Arrow IPC files plus a manifest into a
    /// directory on the node's file system.
    Backup(quorumdb_client::backup::BackupArgs),
    /// Load a backup into a cluster that has none of its tables (rows through the log, in
    /// batches; then the indexes).
    Restore(quorumdb_client::backup::RestoreArgs),
    /// An interactive SQL shell connected to a node (psql-like; `.help` lists its commands).
    #[command(disable_help_flag = true)]
    Shell(quorumdb_client::shell::ShellArgs),
    /// Make a cluster CA and the certificates it signs for nodes and users (PEM files).
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Subcommand)]
enum CertCommand {
    /// Write a new cluster CA, `ca.crt` and `ca.key`, into a directory.
    Init {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Write `node-<id>.crt`/`.key` signed by the CA in `--dir`: the name `node-<id>` (how peers
    /// know the node) plus every `--host` it is reached at (a DNS name or an IP address).
    Node {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        id: u64,
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
    /// Write `client-<user>.crt`/`.key` signed by the CA in `--dir`: a TLS login as `user`.
    Client {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        user: String,
        #[arg(long, default_value_t = 825)]
        days: u32,
    },
}

fn cert(command: CertCommand) -> anyhow::Result<()> {
    use crate::tls::certs;
    let (dir, written) = match command {
        CertCommand::Init { dir, days } => {
            certs::init(&dir, days)?;
            (dir, vec!["ca.crt".to_string(), "ca.key".into()])
        }
        CertCommand::Node { dir, id, hosts, days } => {
            certs::node(&dir, id, &hosts, days)?;
            (dir, vec![format!("node-{id}.crt"), format!("node-{id}.key")])
        }
        CertCommand::Client { dir, user, days } => {
            certs::client(&dir, &user, days)?;
            (dir, vec![format!("client-{user}.crt"), format!("client-{user}.key")])
        }
    };
    for f in written {
        println!("wrote {}", dir.join(f).display());
    }
    Ok(())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        // The shell is a client: its own runtime, no server logging on its output.
        Command::Shell(args) => return quorumdb_client::shell::main(args),
        Command::Cert(c) => {
            return match cert(c) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        c => c,
    };
    crate::telemetry::init_logging();
    // Planning a query recurses once per joined table in parts of DataFusion that do not grow
    // the stack; 2 MiB (tokio's default) overflowed at a 59-table join in a debug build, which
    // aborts the process. 16 MiB of address space per thread, committed only as it is touched.
    const STACK: usize = 16 << 20;
    let rt = match tokio::runtime::Builder::new_multi_thread().thread_stack_size(STACK).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match command {
            Command::Start(args) => start(args).await,
            Command::Demo(args) => crate::demo::run(args).await,
            Command::Load(args) => match quorumdb_client::load_command::run(args).await {
                Ok(true) => Ok(()),
                Ok(false) => anyhow::bail!("some rows were rejected"),
                Err(e) => Err(e),
            },
            Command::Backup(args) => quorumdb_client::backup::run_backup(args).await,
            Command::Restore(args) => quorumdb_client::backup::run_restore(args).await,
            Command::Shell(_) | Command::Cert(_) => unreachable!("run above"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(args: StartArgs) -> anyhow::Result<()> {
    let config = NodeConfig::from_args(args)?;
    let node = Node::start(config.clone()).await?;
    println!(
        "quorumdb node {} listening on {} (gRPC + HTTP); data in {}",
        config.id,
        node.addr,
        config.data_dir.display()
    );
    crate::node::shutdown_signal().await;
    tracing::info!("shutting down");
    node.stop().await;
    Ok(())
}
