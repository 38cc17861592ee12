//! The end-to-end suite: one test binary, so the tests (each with its own
//! `CAIRN_HOME` and node) run in parallel threads.
//!
//! Run with `cargo test -p cairn-tests`; it builds `cairn` and `cairn-node`
//! first (see `cairn_tests::bins`).

mod e2e_auto_hostname;
mod e2e_bad_inputs;
mod e2e_config;
mod e2e_config_files;
mod e2e_configs;
mod e2e_corpus;
mod e2e_crash;
mod e2e_docker;
mod e2e_docker_bad_inputs;
mod e2e_embedded;
mod e2e_entrypoint;
mod e2e_failover;
mod e2e_formats;
mod e2e_hardening;
mod e2e_http_api;
mod e2e_ingress_soak;
mod e2e_init_fmt;
mod e2e_kubernetes;
mod e2e_logs_exec;
mod e2e_operation_vars;
mod e2e_pipeline;
mod e2e_plugins;
mod e2e_restart;
mod e2e_rollback;
mod e2e_runner_agent;
mod e2e_runner_identity;
mod e2e_runner_nat;
mod e2e_runner_resume;
mod e2e_server_vars;
mod e2e_upgrade;
mod e2e_urls;
mod e2e_validate;
mod e2e_web_ui;
mod e2e_workspaces;
