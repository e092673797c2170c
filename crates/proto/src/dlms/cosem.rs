//! COSEM helpers (stub).
