//! resilience-examples (work in progress).
