//! tower-retry-plus: part of the tower resilience suite (work in progress).
#![forbid(unsafe_code)]
