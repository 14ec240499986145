//! GitLab Runner API v4 client: job requests (long polling), acknowledgement, trace upload and
//! job state updates. Owns retries, backoff and the wire format; never runs jobs itself.
//!
//! PLACEHOLDER (skeleton).
