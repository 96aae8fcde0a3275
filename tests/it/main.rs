//! Integration tests: the real pipeline (in-process `Archiver` or the real
//! binary) against the project's simulator on 127.0.0.1, with real SQLite files
//! and archive folders in temp dirs. One scenario per test.

mod archive;
mod auth;
mod cli;
mod daemon;
mod doctor;
mod faults;
mod growth;
mod growth_in_place;
mod harness;
mod layering;
mod long_functions;
mod pipeline;
mod read;
mod resilience;
mod s3_server;
mod sources;
mod storage;
mod storage_e2e;
mod versions;
mod web;
