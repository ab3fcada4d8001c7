//! Threads (placeholder, filled in below).
