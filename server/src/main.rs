//! The `quorumdb` binary.
fn main() -> std::process::ExitCode {
    quorumdb_server::cli::main()
}
