//! Test fixtures (work in progress).
