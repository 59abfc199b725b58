//! The `quorumdb` binary under another name, so this crate's tests can start real node
//! processes.
fn main() -> std::process::ExitCode {
    quorumdb_server::cli::main()
}
