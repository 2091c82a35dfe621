//! A PostgreSQL fixture (written by the tower-redrive work).
