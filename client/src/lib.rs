//! QuorumDB's client commands, run by the `quorumdb` binary against a running cluster and never
//! part of a node: `quorumdb load` ([`load_command`]: files into a table through [`load`],
//! vectors through [`vectors`]), `quorumdb backup` and `quorumdb restore` ([`backup`]), and
//! the interactive SQL client `quorumdb shell` ([`shell`]).
//!
//! Owns the client side of these commands: their command lines, progress, output and errors
//! ([`error`]). It speaks to nodes only through their public surfaces (HTTP, the PostgreSQL
//! wire protocol) and never decides what a value means: conversion and checks are the
//! server's. The server crate only parses `quorumdb`'s subcommands and calls in here.

pub mod backup;
pub mod error;
pub mod load;
pub mod load_command;
pub mod progress;
pub mod shell;
pub mod vectors;

pub use error::ShellError;
