//! Rolling upgrades: the cluster version and its gate (as etcd does).
//!
//! Each member speaks a range of protocol versions (`handshake::Versions`);
//! the **cluster version** is the version the whole cluster may use, kept in
//! the replicated state ([`State::cluster_version`]). It only goes forward,
//! and only the leader moves it ([`Command::SetClusterVersion`]), when
//! - every voter has been heard from within [`FRESH`] and speaks the new
//!   version (as the leader learnt from its last handshake with each), and
//! - that has held for the whole [`ROLLBACK_WINDOW`], or a user ran
//!   `cairn server upgrade --finish`.
//!
//! What the cluster version gates:
//! - commands and features that older members cannot apply: a command
//!   newer than the cluster version is not proposed (today
//!   `SetClusterVersion` itself, the first command of protocol 5);
//! - the format of the records each node writes (`raft::format::WriteFormat`):
//!   release 0.1.0's format until the cluster leaves version 4, so until then
//!   any node can be rolled back to 0.1.0 with its data dir;
//! - peers: once the cluster is at version N, a node that does not speak N
//!   is refused as a peer in both directions (it could not read the log).
//!
//! A new cluster starts at this build's newest version (it has no older
//! member); a cluster made by 0.1.0 is at version 4 until its upgrade
//! finishes.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cairn_protocol::api::{MemberRelease, UpgradeStatus};
use cairn_protocol::handshake::{Versions, PROTOCOL_VERSION};
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::raft::NodeId;
use crate::state::Command;

/// How long every voter must run a release that speaks a newer version
/// before the cluster moves to it by itself. Until then any node can go back
/// to the release it came from (docs/upgrading.md).
pub const ROLLBACK_WINDOW: Duration = Duration::from_secs(10 * 60);
/// `cairn server members` warns when the voters have run different releases
/// for longer than this: an upgrade takes minutes, not this long.
pub const MIXED_WARN_AFTER: Duration = Duration::from_secs(30 * 60);
/// A voter counts as running the release of its last handshake only if the
/// leader heard from it this recently (a node being replaced is not).
pub const FRESH: Duration = Duration::from_secs(3);
/// How often every node looks at the cluster version (and the leader at
/// its voters).
const TICK: Duration = Duration::from_secs(1);

/// The leader's memory of the upgrade in progress (not replicated: a new
/// leader starts the window again, which only ever delays the move).
#[derive(Default)]
pub struct Tracker {
    inner: Mutex<Tracked>,
}

#[derive(Default)]
struct Tracked {
    /// The version every voter speaks, and since when that holds.
    eligible: Option<(u32, Instant)>,
    /// Since when the voters run different releases.
    mixed_since: Option<Instant>,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Tracked> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What each member runs, as this node knows, and the highest version every
/// voter speaks (or why that is not known).
fn survey(cluster: &Cluster) -> (Vec<MemberRelease>, Result<u32, String>, Vec<String>) {
    let m = cluster.raft.metrics();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let mut releases = Vec::new();
    let mut shared = Ok(PROTOCOL_VERSION);
    let mut voter_releases = Vec::new();
    for (id, _) in membership.nodes() {
        let voter = voters.contains(id);
        let (release, versions, ago) = if *id == cluster.raft.id() {
            (
                Some(cairn_protocol::VERSION.to_string()),
                Some(Versions::OURS),
                Some(Duration::ZERO),
            )
        } else {
            match cluster.peers.speaks(*id) {
                Some((s, ago)) => (Some(s.release), Some(s.versions), Some(ago)),
                None => (None, None, None),
            }
        };
        if voter {
            if let Some(r) = &release {
                voter_releases.push(r.clone());
            }
            let fresh = *id == cluster.raft.id() || cluster.peers.heard_within(*id, FRESH);
            shared = match (shared, versions) {
                (Err(e), _) => Err(e),
                (Ok(_), None) => Err(format!("voter {id:x} has not been heard from")),
                (Ok(_), Some(_)) if !fresh => Err(format!(
                    "voter {id:x} has not answered for {} s",
                    FRESH.as_secs()
                )),
                (Ok(v), Some(r)) => Ok(v.min(r.max)),
            };
        }
        releases.push(MemberRelease {
            id: *id,
            release,
            versions,
            learnt_ms_ago: ago.map(|d| d.as_millis() as u64),
        });
    }
    voter_releases.sort();
    voter_releases.dedup();
    (releases, shared, voter_releases)
}

/// The upgrade as this node sees it (complete on the leader).
pub fn status(cluster: &Cluster, tracker: &Tracker) -> UpgradeStatus {
    let (releases, shared, _) = survey(cluster);
    let cluster_version = cluster.raft.read_local(|s| s.cluster_version());
    let t = tracker.lock();
    let finishes_in_ms = match (&shared, t.eligible) {
        (Ok(v), Some((w, since))) if *v == w && w > cluster_version => {
            Some(ROLLBACK_WINDOW.saturating_sub(since.elapsed()).as_millis() as u64)
        }
        _ => None,
    };
    UpgradeStatus {
        members: cluster.member_info(),
        releases,
        cluster_version,
        next_version: shared.ok(),
        finishes_in_ms,
        mixed_for_ms: t.mixed_since.map(|s| s.elapsed().as_millis() as u64),
        mixed_warn_after_ms: MIXED_WARN_AFTER.as_millis() as u64,
        answered_by: cluster.raft.id(),
    }
}

/// Move the cluster to the highest version every voter speaks, now (the
/// leader only). Refused, naming why, when a voter is not known to speak a
/// newer version than the cluster's.
pub async fn finish(cluster: &Cluster, tracker: &Tracker) -> Result<u32, String> {
    if !cluster.raft.is_leader() {
        return Err("only the leader can finish an upgrade; ask again".into());
    }
    let (releases, shared, _) = survey(cluster);
    let cluster_version = cluster.raft.read_local(|s| s.cluster_version());
    let next = shared.map_err(|why| format!("the upgrade cannot finish: {why}"))?;
    if next <= cluster_version {
        let behind: Vec<String> = releases
            .iter()
            .filter(|r| r.versions.is_none_or(|v| v.max <= cluster_version))
            .map(|r| {
                format!(
                    "node {:x} ({})",
                    r.id,
                    r.release.as_deref().unwrap_or("release unknown")
                )
            })
            .collect();
        if cluster_version >= PROTOCOL_VERSION || behind.is_empty() {
            return Ok(cluster_version);
        }
        return Err(format!(
            "the cluster stays at protocol version {cluster_version}: {} cannot speak a newer one; upgrade {} first",
            behind.join(", "),
            if behind.len() == 1 { "it" } else { "them" }
        ));
    }
    set_version(cluster, tracker, next).await?;
    Ok(next)
}

async fn set_version(cluster: &Cluster, tracker: &Tracker, version: u32) -> Result<(), String> {
    cluster
        .write(Command::SetClusterVersion { version })
        .await?;
    tracing::info!(
        cluster_version = version,
        "the upgrade is finished: the cluster uses protocol version {version}"
    );
    tracker.lock().eligible = None;
    Ok(())
}

/// Every node: keep the peer floor at the cluster version. The leader:
/// watch the voters' releases and move the cluster version when the
/// rollback window has passed.
pub async fn run(
    cluster: std::sync::Arc<Cluster>,
    tracker: std::sync::Arc<Tracker>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let cluster_version = cluster.raft.read_local(|s| s.cluster_version());
        cluster.peers.set_floor(cluster_version);
        if !cluster.raft.is_leader() {
            *tracker.lock() = Tracked::default();
            continue;
        }
        let (_, shared, voter_releases) = survey(&cluster);
        let due = {
            let mut t = tracker.lock();
            if voter_releases.len() > 1 {
                let since = *t.mixed_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= MIXED_WARN_AFTER {
                    tracing::warn!(
                        releases = voter_releases.join(", "),
                        "the voters have run different releases for {} min: finish the upgrade (docs/upgrading.md)",
                        since.elapsed().as_secs() / 60
                    );
                }
            } else {
                t.mixed_since = None;
            }
            match shared {
                Ok(v) if v > cluster_version => {
                    let since = match t.eligible {
                        Some((w, since)) if w == v => since,
                        _ => {
                            tracing::info!(
                                cluster_version,
                                next = v,
                                "every voter speaks protocol version {v}: the cluster moves to it in {} s unless a node is rolled back (or now, with `cairn server upgrade --finish`)",
                                ROLLBACK_WINDOW.as_secs()
                            );
                            Instant::now()
                        }
                    };
                    t.eligible = Some((v, since));
                    (since.elapsed() >= ROLLBACK_WINDOW).then_some(v)
                }
                _ => {
                    t.eligible = None;
                    None
                }
            }
        };
        if let Some(v) = due {
            if let Err(e) = set_version(&cluster, &tracker, v).await {
                tracing::warn!(error = %e, "could not move the cluster version");
            }
        }
    }
}
