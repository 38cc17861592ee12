//! `cairn-entrypoint`: wraps an app process (issue 4). Until it lands, it
//! says so instead of pretending to work.

fn main() -> std::process::ExitCode {
    eprintln!("cairn-entrypoint: not built yet (tracked in issue 4); run the app directly");
    std::process::ExitCode::from(2)
}
