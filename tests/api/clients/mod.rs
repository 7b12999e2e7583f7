//! Clients and the client-credentials grant.

mod admin;
mod credentials;
