//! One client connection to one member of either system, with the two calls
//! the bench makes: a durable write of an 8-byte key, and "who does this
//! member think is the leader".

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail};
use cairn_protocol::api::{ClientRequest, ClientResponse};
use cairn_protocol::rpc::{self, Dial, RpcError, Session};
use cairn_protocol::types::{ConfigScope, ConfigVar};

use cairn_tests::bench::procs::client_dial;

use crate::etcd_grpc::EtcdConn;

/// Project scope the Cairn writes go to.
pub const SCOPE: &str = "bench";

#[derive(Clone)]
pub enum Conn {
    Cairn(Arc<CairnConn>),
    Etcd(EtcdConn),
}

/// A Cairn client session (QUIC) that reconnects after the connection is lost.
pub struct CairnConn {
    dial: Dial,
    session: Mutex<Option<Session>>,
}

pub fn cairn_dial(addr: &str, ca_fingerprint: &str, token: &str) -> Dial {
    client_dial("cluster-bench", addr, ca_fingerprint, token)
}

impl CairnConn {
    /// Connect now.
    pub async fn connect(dial: Dial) -> anyhow::Result<Conn> {
        let s = rpc::connect(&dial)
            .await
            .map_err(|e| anyhow!("connecting to {}: {e}", dial.addr))?;
        Ok(Conn::Cairn(Arc::new(CairnConn {
            dial,
            session: Mutex::new(Some(s)),
        })))
    }

    /// Connect on first use.
    pub fn lazy(dial: Dial) -> Conn {
        Conn::Cairn(Arc::new(CairnConn {
            dial,
            session: Mutex::new(None),
        }))
    }

    async fn session(&self) -> anyhow::Result<Session> {
        let cur = self
            .session
            .lock()
            .map_err(|_| anyhow!("poisoned lock"))?
            .clone();
        if let Some(s) = cur {
            return Ok(s);
        }
        let s = rpc::connect(&self.dial)
            .await
            .map_err(|e| anyhow!("connecting to {}: {e}", self.dial.addr))?;
        *self.session.lock().map_err(|_| anyhow!("poisoned lock"))? = Some(s.clone());
        Ok(s)
    }

    pub async fn raw_call(&self, req: &ClientRequest) -> anyhow::Result<ClientResponse> {
        let s = self.session().await?;
        match rpc::call(&s.conn, req).await {
            Ok(r) => Ok(r),
            Err(e) => {
                if matches!(
                    e,
                    RpcError::Connection(_) | RpcError::Write(_) | RpcError::Closed(_)
                ) {
                    // Lost: the next call reconnects.
                    if let Ok(mut g) = self.session.lock() {
                        *g = None;
                    }
                }
                Err(anyhow!("{e}"))
            }
        }
    }

    fn close(&self) {
        if let Ok(mut g) = self.session.lock() {
            if let Some(s) = g.take() {
                s.conn.close(0u32.into(), b"bench done");
            }
        }
    }
}

impl Conn {
    /// One durable write: Cairn SetConfig (a Raft write) / etcd Put.
    pub async fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        match self {
            Conn::Cairn(c) => {
                let req = ClientRequest::SetConfig {
                    var: ConfigVar {
                        scope: ConfigScope::Project(SCOPE.into()),
                        name: key.into(),
                        value: value.into(),
                        secret: false,
                    },
                };
                match c.raw_call(&req).await? {
                    ClientResponse::Ok => Ok(()),
                    other => bail!("SetConfig answered {other:?}"),
                }
            }
            Conn::Etcd(e) => {
                e.put(key.as_bytes(), value.as_bytes()).await?;
                Ok(())
            }
        }
    }

    /// The member's own view of the current leader (Cairn node id / etcd
    /// member id), `None` while it knows none.
    pub async fn leader_view(&self) -> anyhow::Result<Option<u64>> {
        match self {
            Conn::Cairn(c) => match c.raw_call(&ClientRequest::ServerInfo).await? {
                ClientResponse::ServerInfo(i) => Ok(i.leader),
                other => bail!("ServerInfo answered {other:?}"),
            },
            Conn::Etcd(e) => {
                let s = e.status().await?;
                Ok((s.leader != 0).then_some(s.leader))
            }
        }
    }

    pub fn close(&self) {
        if let Conn::Cairn(c) = self {
            c.close();
        }
    }
}

/// `f` bounded by `t`.
pub async fn within<T>(
    t: Duration,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(t, f)
        .await
        .map_err(|_| anyhow!("no answer within {} ms", t.as_millis()))?
}
