//! The `quorumdb` binary.
#[global_allocator]
static ALLOCATOR: quorumdb_server::Allocator = quorumdb_server::Allocator;

fn main() -> std::process::ExitCode {
    quorumdb_server::cli::main()
}
