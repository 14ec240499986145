//! The VM startup script (placeholder, filled next).
