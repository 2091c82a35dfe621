//! resilience-tests (work in progress).
