//! The `quorumdb` binary under another name, so this crate's tests can start real node
//! processes.
#[global_allocator]
static ALLOCATOR: quorumdb_server::Allocator = quorumdb_server::Allocator;

fn main() -> std::process::ExitCode {
    quorumdb_server::cli::main()
}
