//! mcp-agent: keeps a machine's podman containers equal to a desired state held in an
//! embedded SQLite registry, and recreates them after podman's own database is lost.

pub mod agent;
pub mod certs;
pub mod cli;
pub mod commands;
pub mod compose;
pub mod config;
pub mod container;
pub mod control;
pub mod error;
pub mod files;
pub mod health;
pub mod hostpath;
pub mod kube;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod ports;
pub mod proxy;
pub mod reconcile;
pub mod registry;
pub mod routes;
pub mod runtime;
pub mod spec;
pub mod volumes;
