//! Connecting the CLI to a node: resolve the context (flag, `CAIRN_CONTEXT`,
//! the current one, or the embedded default), dial with the pinned CA, say
//! hello with the user token.

use cairn_protocol::handshake::Role;
use cairn_protocol::pki::TransportLimits;
use cairn_protocol::rpc::{self, Dial, Session};

use crate::context::{self, Context};
use crate::local;

pub async fn resolve(explicit: Option<&str>, quiet: bool) -> anyhow::Result<Context> {
    let name = match explicit {
        Some(n) => Some(n.to_string()),
        None => match std::env::var("CAIRN_CONTEXT") {
            Ok(n) if !n.is_empty() => Some(n),
            _ => context::current()?,
        },
    };
    match name {
        Some(n) => {
            let c = context::load(&n)?;
            if c.local {
                Ok(local::ensure(quiet).await?)
            } else {
                Ok(c)
            }
        }
        None => Ok(local::ensure(quiet).await?),
    }
}

pub async fn connect(ctx: &Context) -> Result<Session, rpc::RpcError> {
    let dial = Dial {
        addr: ctx.address.clone(),
        ca_fingerprint: ctx.ca_fingerprint.clone(),
        identity: None,
        role: Role::Client,
        token: ctx.token.clone(),
        agent: format!("cairn {}", cairn_protocol::VERSION),
        limits: TransportLimits::DEFAULT,
    };
    rpc::connect(&dial).await
}
