//! `cairn-plugin-misbehave`: an external plugin that misbehaves as its config's `mode`
//! says, for the tests of how Cairn survives plugins (issue 16). Its builder (any name: the
//! tests install it under several) runs one of:
//! - `ok`: builds a `misbehave.Thing` (and says so in a step);
//! - `crash`: writes to stderr, starts a step, then exits with code 3;
//! - `hang`: starts `sleep 600` (writing its pid to `pidfile`), then never answers;
//! - `garbage`: writes plain text to stdout where a frame belongs.

use std::io::Write;

use cairn_plugin_sdk::{Ctx, Error, Plugin, Value};

fn build(ctx: &mut Ctx, config: &serde_json::Value) -> Result<Value, Error> {
    match config["mode"].as_str().unwrap_or("ok") {
        "ok" => {
            ctx.step("Making a thing", |ctx| {
                ctx.line("thing made");
                Ok(())
            })?;
            Ok(Value::new(
                "misbehave.Thing",
                serde_json::json!({ "ok": true }),
            ))
        }
        "crash" => {
            eprintln!("misbehave: about to crash on purpose");
            ctx.step("Crashing", |_| -> Result<Value, Error> {
                std::process::exit(3);
            })
        }
        "hang" => {
            let child = std::process::Command::new("sleep").arg("600").spawn()?;
            if let Some(path) = config["pidfile"].as_str() {
                std::fs::write(path, child.id().to_string())?;
            }
            ctx.line("hanging now");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(60));
            }
        }
        "garbage" => {
            let mut out = std::io::stdout();
            let _ = out.write_all(b"Oops, this is not a frame of anything\n");
            let _ = out.flush();
            std::thread::sleep(std::time::Duration::from_secs(600));
            Err(Error::new("unreachable"))
        }
        other => Err(Error::field("mode", format!("unknown mode {other:?}"))),
    }
}

fn main() {
    Plugin::new("misbehave")
        .builder("misbehave.Thing", build)
        .serve()
}
