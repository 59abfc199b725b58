//! The Raft node type: openraft over our [`TypeConfig`] and [`StateMachineStore`]. Its own
//! module so that the type configuration and the state machine do not import each other.

use crate::state_machine::StateMachineStore;
use crate::types::TypeConfig;

pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;
