//! Tessera's raft consensus library (work in progress).
