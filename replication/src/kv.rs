//! The built-in key-value table: the first [`Application`] on the replicated state machine.
//!
//! Owns the `k/` key prefix of the state. Commands are `set`, `delete` and compare-and-set;
//! reads go straight to the applied state through a [`StateReader`].

use serde::{Deserialize, Serialize};

use crate::state_machine::{Application, StateReader, StateTxn};
use crate::types::Command;

/// The [`Router`](crate::Router) tag of KV commands.
pub const TAG: u8 = b'k';

/// Where KV keys live in the state machine's keyspace.
pub const PREFIX: &[u8] = b"k/";

/// Largest key the KV table accepts, in bytes.
pub const MAX_KEY_LEN: usize = 4096;

/// A KV command as it is stored in the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    Set {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
    },
    /// Sets `key` to `value` only if its current value is `expected` (`None`: key absent).
    CompareAndSet {
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        expected: Option<serde_bytes::ByteBuf>,
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
    },
}

/// The result of a KV command, identical on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvResponse {
    /// The command took effect; `previous` is the value it replaced or removed.
    Done { previous: Option<serde_bytes::ByteBuf> },
    /// A compare-and-set found another value (or none) and changed nothing.
    CasFailed { current: Option<serde_bytes::ByteBuf> },
}

impl KvCommand {
    pub fn key(&self) -> &[u8] {
        match self {
            Self::Set { key, .. } | Self::Delete { key } | Self::CompareAndSet { key, .. } => key,
        }
    }

    /// Encodes the command for the log, tagged for the [`Router`](crate::Router).
    pub fn encode(&self) -> Command {
        crate::router::tagged(TAG, &rmp_serde::to_vec(self).expect("KV commands always encode"))
    }
}

impl KvResponse {
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        rmp_serde::from_slice(bytes).map_err(|e| format!("bad KV response: {e}"))
    }
}

fn state_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(PREFIX.len() + key.len());
    k.extend_from_slice(PREFIX);
    k.extend_from_slice(key);
    k
}

/// The KV table's apply logic.
#[derive(Debug, Default, Clone, Copy)]
pub struct KvApp;

impl Application for KvApp {
    fn apply(&self, command: &[u8], txn: &mut dyn StateTxn) -> Result<Vec<u8>, Vec<u8>> {
        let cmd: KvCommand =
            rmp_serde::from_slice(command).map_err(|e| format!("undecodable KV command: {e}").into_bytes())?;
        let key = state_key(cmd.key());
        let current = txn.get(&key).map_err(|e| e.to_string().into_bytes())?;
        let response = match cmd {
            KvCommand::Set { value, .. } => {
                txn.put(&key, &value);
                KvResponse::Done { previous: current.map(Into::into) }
            }
            KvCommand::Delete { .. } => {
                txn.delete(&key);
                KvResponse::Done { previous: current.map(Into::into) }
            }
            KvCommand::CompareAndSet { expected, value, .. } => {
                if current.as_deref() == expected.as_deref().map(|v| &v[..]) {
                    txn.put(&key, &value);
                    KvResponse::Done { previous: current.map(Into::into) }
                } else {
                    KvResponse::CasFailed { current: current.map(Into::into) }
                }
            }
        };
        Ok(rmp_serde::to_vec(&response).expect("KV responses always encode"))
    }
}

/// Reads one key from the applied state.
pub fn get(reader: &StateReader, key: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
    reader.get(&state_key(key))
}

/// Lists up to `limit` keys starting with `prefix`, from `start` on, with their values.
pub fn scan(
    reader: &StateReader,
    prefix: &[u8],
    start: &[u8],
    limit: usize,
) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let rows = reader.scan_prefix(&state_key(prefix), &state_key(start), limit)?;
    Ok(rows.into_iter().map(|(k, v)| (k[PREFIX.len()..].to_vec(), v)).collect())
}
