//! resilience-benches (work in progress).
