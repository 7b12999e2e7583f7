//! The foundation: health and readiness, the HTTP edge, and the process from start to stop.

mod health;
mod http;
mod lifecycle;
