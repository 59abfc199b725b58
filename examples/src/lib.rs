//! Library parts of the example clients: loaders callable from their binaries and from tests.

pub mod vectors;
