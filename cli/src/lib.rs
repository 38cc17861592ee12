pub mod appconfig;
pub mod client;
pub mod commands;
pub mod config;
pub mod context;
pub mod lifecycle;
pub mod local;
pub mod paths;
/// The plugin framework and built-in plugins (the `cairn-plugins` crate, `cli/plugins/`).
pub use cairn_plugins as plugins;
pub mod reach;
pub mod runner;
pub mod ui;
pub mod upload;
