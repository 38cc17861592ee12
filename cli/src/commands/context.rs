//! `context create|list|use|inspect|delete`.

use crate::context::{self, Context};
use crate::local;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ContextCmd {
    /// Create a context for a node: its address, its CA fingerprint (printed
    /// by `cairn-node` at start), and a user token or the one-time bootstrap token.
    Create {
        name: String,
        /// host:port of the node's QUIC listener.
        #[arg(long)]
        address: String,
        /// The cluster CA's fingerprint (sha256:…), pinned from now on.
        #[arg(long)]
        ca_fingerprint: String,
        /// A user token.
        #[arg(
            long,
            conflicts_with = "bootstrap_token",
            required_unless_present = "bootstrap_token"
        )]
        token: Option<String>,
        /// The node's one-time bootstrap token: exchanged for a user token now.
        #[arg(long)]
        bootstrap_token: Option<String>,
        /// Make it the current context.
        #[arg(long = "use")]
        use_it: bool,
    },
    /// List contexts (* marks the current one).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make a context the current one.
    Use { name: String },
    /// Show a context (the token is masked).
    Inspect {
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a context.
    Delete { name: String },
}

fn masked(c: &Context) -> Context {
    let keep: String = c.token.chars().take(12).collect();
    Context {
        token: format!("{keep}…"),
        ..c.clone()
    }
}

pub async fn run(cmd: &ContextCmd) -> anyhow::Result<i32> {
    match cmd {
        ContextCmd::Create {
            name,
            address,
            ca_fingerprint,
            token,
            bootstrap_token,
            use_it,
        } => {
            if context::load(name).is_ok() {
                anyhow::bail!(context::ContextError::Exists(name.clone()));
            }
            let token = match (token, bootstrap_token) {
                (Some(t), _) => t.clone(),
                (None, Some(b)) => local::exchange_bootstrap(address, ca_fingerprint, b).await?,
                (None, None) => anyhow::bail!("give --token or --bootstrap-token"),
            };
            let c = Context {
                name: name.clone(),
                address: address.clone(),
                ca_fingerprint: ca_fingerprint.clone(),
                token,
                local: false,
                members: Vec::new(),
                runner: None,
            };
            // Check it works before saving it.
            let s = crate::client::connect(&c).await?;
            s.conn.close(0u32.into(), b"bye");
            context::save(&c, false)?;
            if *use_it || context::current()?.is_none() {
                context::set_current(name)?;
            }
            println!(
                "Context {name:?} created{}.",
                if context::current()?.as_deref() == Some(name) {
                    " and in use"
                } else {
                    ""
                }
            );
        }
        ContextCmd::List { json } => {
            let all = context::list()?;
            let cur = context::current()?;
            if *json {
                let v: Vec<Context> = all.iter().map(masked).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else if all.is_empty() {
                println!("No contexts. `cairn up` creates the local one; `cairn context create` adds others.");
            } else {
                let rows = all
                    .iter()
                    .map(|c| {
                        vec![
                            if cur.as_deref() == Some(&c.name) {
                                "*".into()
                            } else {
                                String::new()
                            },
                            c.name.clone(),
                            if c.local {
                                "(local node)".into()
                            } else {
                                c.address.clone()
                            },
                            c.ca_fingerprint.chars().take(23).collect::<String>() + "…",
                        ]
                    })
                    .collect::<Vec<_>>();
                super::table(&["", "NAME", "ADDRESS", "CA"], &rows);
            }
        }
        ContextCmd::Use { name } => {
            context::set_current(name)?;
            println!("Using context {name:?}.");
        }
        ContextCmd::Inspect { name, json } => {
            let name = match name {
                Some(n) => n.clone(),
                None => context::current()?
                    .ok_or_else(|| anyhow::anyhow!("no current context; name one"))?,
            };
            let c = masked(&context::load(&name)?);
            if *json {
                println!("{}", serde_json::to_string_pretty(&c)?);
            } else {
                println!("Name:           {}", c.name);
                println!(
                    "Address:        {}",
                    if c.local {
                        "(the local node, started on demand)".into()
                    } else {
                        c.address.clone()
                    }
                );
                println!("CA fingerprint: {}", c.ca_fingerprint);
                println!("Token:          {}", c.token);
                if !c.members.is_empty() {
                    println!("Members:        {}", c.members.join(", "));
                }
            }
        }
        ContextCmd::Delete { name } => {
            context::delete(name)?;
            println!("Context {name:?} deleted.");
        }
    }
    Ok(0)
}
