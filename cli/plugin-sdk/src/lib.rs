//! Write a Cairn plugin as a program of its own.
//!
//! A plugin is an executable named `cairn-plugin-NAME`, found in the project's
//! `.cairn/plugins/`, then the user's `~/.config/cairn/plugins/`, then `PATH`. Cairn runs it
//! once per operation and speaks the [`protocol`] with it over stdin and stdout. This crate
//! is that protocol and a small synchronous SDK:
//!
//! ```no_run
//! use cairn_plugin_sdk::{Ctx, Error, Plugin, Value};
//!
//! fn build(ctx: &mut Ctx, config: &serde_json::Value) -> Result<Value, Error> {
//!     let greeting = config["greeting"].as_str().unwrap_or("hello");
//!     ctx.step("Saying hello", |ctx| {
//!         ctx.line(&format!("{greeting} from {}", ctx.info.app));
//!         Ok(())
//!     })?;
//!     Ok(Value::new("hello.Greeting", serde_json::json!({ "text": greeting })))
//! }
//!
//! fn main() {
//!     Plugin::new("hello").builder("hello.Greeting", build).serve()
//! }
//! ```
//!
//! What a plugin prints goes where a built-in's goes: [`Ctx::line`] and [`Ctx::warn`] are
//! output lines of the job, [`Ctx::step`] shows a step that ends with ✓ or ✗, and
//! [`Ctx::table`] an aligned table. Its stderr is shown too (as warnings). It must not write
//! to stdout itself: stdout carries the protocol.

pub mod protocol;

use std::io::{self, Write};

use protocol::{Component, HostMsg, MapperInfo, Op, PluginMsg, StepStatus, Stream};
pub use protocol::{ComponentKind, OpInfo, Value};

impl Value {
    pub fn new(type_name: &str, data: serde_json::Value) -> Value {
        Value {
            type_name: type_name.to_string(),
            data,
        }
    }
}

/// Why an operation failed; `field` names the config field at fault (for config checks).
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub message: String,
    pub field: Option<String>,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            field: None,
        }
    }

    /// An error about the config field `field` (Cairn points at its line).
    pub fn field(field: &str, message: impl Into<String>) -> Error {
        Error {
            message: message.into(),
            field: Some(field.to_string()),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for Error {
    fn from(s: String) -> Error {
        Error::new(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Error {
        Error::new(s)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::new(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::new(e.to_string())
    }
}

/// What an operation may use: what it runs for, and the job's output.
pub struct Ctx {
    pub info: OpInfo,
    out: Box<dyn Write>,
    next_step: u32,
}

impl Ctx {
    fn send(&mut self, msg: &PluginMsg) {
        // Cairn is gone when this fails: nothing is left to tell.
        let _ = protocol::write_frame(&mut self.out, msg);
    }

    /// One line of output.
    pub fn line(&mut self, text: &str) {
        self.send(&PluginMsg::Output {
            stream: Stream::Info,
            line: text.to_string(),
        });
    }

    /// One line of output, marked as a warning.
    pub fn warn(&mut self, text: &str) {
        self.send(&PluginMsg::Output {
            stream: Stream::Stderr,
            line: text.to_string(),
        });
    }

    /// Runs `work` as a step named `name`: shown started, then ✓ or ✗ with the error.
    pub fn step<T>(
        &mut self,
        name: &str,
        work: impl FnOnce(&mut Ctx) -> Result<T, Error>,
    ) -> Result<T, Error> {
        self.next_step += 1;
        let id = self.next_step;
        self.send(&PluginMsg::Step {
            id,
            name: name.to_string(),
            status: StepStatus::Started,
            detail: None,
        });
        let result = work(self);
        let (status, detail) = match &result {
            Ok(_) => (StepStatus::Ok, None),
            Err(e) => (StepStatus::Failed, Some(e.message.clone())),
        };
        self.send(&PluginMsg::Step {
            id,
            name: name.to_string(),
            status,
            detail,
        });
        result
    }

    /// An aligned table.
    pub fn table(&mut self, headers: &[&str], rows: Vec<Vec<String>>) {
        self.send(&PluginMsg::Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows,
        });
    }
}

type Config = serde_json::Value;
type BuildFn = Box<dyn Fn(&mut Ctx, &Config) -> Result<Value, Error>>;
type TakeFn = Box<dyn Fn(&mut Ctx, &Config, &Value) -> Result<Value, Error>>;
type DestroyFn = Box<dyn Fn(&mut Ctx, &Config, &Value) -> Result<(), Error>>;
type MapFn = Box<dyn Fn(&mut Ctx, &Value) -> Result<Value, Error>>;
type CheckFn = Box<dyn Fn(&Config) -> Result<(), Error>>;

struct Entry {
    component: Component,
    run: Runner,
    check: Option<CheckFn>,
}

enum Runner {
    Build(BuildFn),
    Take(TakeFn),
    Platform(TakeFn, DestroyFn),
}

/// A plugin program: its components and mappers, then [`Plugin::serve`].
pub struct Plugin {
    name: String,
    entries: Vec<Entry>,
    mappers: Vec<(MapperInfo, MapFn)>,
}

impl Plugin {
    /// A plugin named `name` (its `use "NAME"` in a config).
    pub fn new(name: &str) -> Plugin {
        Plugin {
            name: name.to_string(),
            entries: Vec::new(),
            mappers: Vec::new(),
        }
    }

    fn add(mut self, kind: ComponentKind, inputs: &[&str], output: &str, run: Runner) -> Plugin {
        self.entries.retain(|e| e.component.kind != kind);
        self.entries.push(Entry {
            component: Component {
                kind,
                input_types: inputs.iter().map(|s| s.to_string()).collect(),
                output_type: output.to_string(),
            },
            run,
            check: None,
        });
        self
    }

    /// A builder making values of type `output`.
    pub fn builder(
        self,
        output: &str,
        build: impl Fn(&mut Ctx, &Config) -> Result<Value, Error> + 'static,
    ) -> Plugin {
        self.add(
            ComponentKind::Builder,
            &[],
            output,
            Runner::Build(Box::new(build)),
        )
    }

    /// A registry taking one of `inputs` and making `output`.
    pub fn registry(
        self,
        inputs: &[&str],
        output: &str,
        push: impl Fn(&mut Ctx, &Config, &Value) -> Result<Value, Error> + 'static,
    ) -> Plugin {
        self.add(
            ComponentKind::Registry,
            inputs,
            output,
            Runner::Take(Box::new(push)),
        )
    }

    /// A platform taking one of `inputs` and making deployments of type `output`.
    pub fn platform(
        self,
        inputs: &[&str],
        output: &str,
        deploy: impl Fn(&mut Ctx, &Config, &Value) -> Result<Value, Error> + 'static,
        destroy: impl Fn(&mut Ctx, &Config, &Value) -> Result<(), Error> + 'static,
    ) -> Plugin {
        self.add(
            ComponentKind::Platform,
            inputs,
            output,
            Runner::Platform(Box::new(deploy), Box::new(destroy)),
        )
    }

    /// A releaser taking one of `inputs` (deployments) and making `output`.
    pub fn releaser(
        self,
        inputs: &[&str],
        output: &str,
        release: impl Fn(&mut Ctx, &Config, &Value) -> Result<Value, Error> + 'static,
    ) -> Plugin {
        self.add(
            ComponentKind::Releaser,
            inputs,
            output,
            Runner::Take(Box::new(release)),
        )
    }

    /// Checks the config of the component of `kind` (added before) when Cairn loads the
    /// config, before anything runs: return [`Error::field`] to point at a field.
    pub fn check(
        mut self,
        kind: ComponentKind,
        check: impl Fn(&Config) -> Result<(), Error> + 'static,
    ) -> Plugin {
        if let Some(e) = self.entries.iter_mut().find(|e| e.component.kind == kind) {
            e.check = Some(Box::new(check));
        }
        self
    }

    /// A mapper from values of type `from` to values of type `to`; Cairn uses it wherever a
    /// stage needs `to` and has `from`, whoever's plugins they are.
    pub fn mapper(
        mut self,
        from: &str,
        to: &str,
        map: impl Fn(&mut Ctx, &Value) -> Result<Value, Error> + 'static,
    ) -> Plugin {
        self.mappers.push((
            MapperInfo {
                from: from.to_string(),
                to: to.to_string(),
            },
            Box::new(map),
        ));
        self
    }

    /// Serves one session on stdin/stdout, then exits the process (0 when the protocol was
    /// followed, 2 when Cairn spoke something else).
    pub fn serve(self) -> ! {
        let stdin = io::stdin();
        let mut input = stdin.lock();
        let out: Box<dyn Write> = Box::new(io::stdout());
        let code = match self.session(&mut input, out) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("cairn-plugin-{}: {e}", self.name);
                2
            }
        };
        std::process::exit(code)
    }

    /// One session over `input` and `out` (what [`Plugin::serve`] does on stdio).
    pub fn session(&self, input: &mut dyn io::Read, mut out: Box<dyn Write>) -> io::Result<()> {
        let Some(HostMsg::Hello { versions }) = protocol::read_frame(input)? else {
            return Err(io::Error::other("expected a hello first"));
        };
        let Some(version) = versions
            .iter()
            .copied()
            .filter(|v| protocol::VERSIONS.contains(v))
            .max()
        else {
            protocol::write_frame(
                &mut out,
                &PluginMsg::Error {
                    message: format!(
                        "this plugin speaks protocol versions {:?}, Cairn offered {versions:?}",
                        protocol::VERSIONS
                    ),
                    field: None,
                },
            )?;
            return Ok(());
        };
        protocol::write_frame(
            &mut out,
            &PluginMsg::Hello {
                version,
                name: self.name.clone(),
                components: self.entries.iter().map(|e| e.component.clone()).collect(),
                mappers: self.mappers.iter().map(|(m, _)| m.clone()).collect(),
            },
        )?;
        let Some(HostMsg::Request {
            op,
            kind,
            config,
            info,
            input: value,
            to,
        }) = protocol::read_frame(input)?
        else {
            return Ok(()); // only the description was wanted
        };
        let mut ctx = Ctx {
            info,
            out,
            next_step: 0,
        };
        let result = self.dispatch(&mut ctx, op, kind, &config, value.as_ref(), to.as_deref());
        let msg = match result {
            Ok(value) => PluginMsg::Done { value },
            Err(e) => PluginMsg::Error {
                message: e.message,
                field: e.field,
            },
        };
        protocol::write_frame(&mut ctx.out, &msg)
    }

    fn dispatch(
        &self,
        ctx: &mut Ctx,
        op: Op,
        kind: Option<ComponentKind>,
        config: &Config,
        value: Option<&Value>,
        to: Option<&str>,
    ) -> Result<Option<Value>, Error> {
        let need_input = || value.ok_or_else(|| Error::new("the request carries no input value"));
        if op == Op::Map {
            let v = need_input()?;
            let to = to.unwrap_or_default();
            let (_, map) = self
                .mappers
                .iter()
                .find(|(m, _)| m.from == v.type_name && m.to == to)
                .ok_or_else(|| {
                    Error::new(format!("this plugin has no mapper {} -> {to}", v.type_name))
                })?;
            return map(ctx, v).map(Some);
        }
        let kind = kind.ok_or_else(|| Error::new("the request names no component kind"))?;
        let entry = self
            .entries
            .iter()
            .find(|e| e.component.kind == kind)
            .ok_or_else(|| Error::new(format!("this plugin has no {kind:?} component")))?;
        match (op, &entry.run) {
            (Op::Configure, _) => match &entry.check {
                Some(check) => check(config).map(|()| None),
                None => Ok(None),
            },
            (Op::Build, Runner::Build(f)) => f(ctx, config).map(Some),
            (Op::Push | Op::Release, Runner::Take(f)) | (Op::Deploy, Runner::Platform(f, _)) => {
                f(ctx, config, need_input()?).map(Some)
            }
            (Op::Destroy, Runner::Platform(_, destroy)) => {
                destroy(ctx, config, need_input()?).map(|()| None)
            }
            (op, _) => Err(Error::new(format!("a {kind:?} component cannot do {op:?}"))),
        }
    }
}
