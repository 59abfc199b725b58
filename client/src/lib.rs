//! QuorumDB's client commands, run by the `quorumdb` binary against a running cluster and never
//! part of a node: `quorumdb load` ([`load_command`]: files into a table through [`load`],
//! vectors through [`vectors`]), `quorumdb backup` and `quorumdb restore` ([`backup`]).
//!
//! Owns the client side of these commands: their command lines, progress and reports. It
//! speaks to nodes only through their public surfaces (HTTP), and never decides what a value
//! means: conversion and checks are the server's.

pub mod backup;
pub mod load;
pub mod load_command;
pub mod vectors;
