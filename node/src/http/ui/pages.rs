//! The UI's pages, as markup ([`maud`] escapes every value it is given).

use axum::http::StatusCode;
use cairn_protocol::api::{MemberInfo, MemberRole, ServerInfo};
use cairn_protocol::types::{
    ConfigScope, ConfigVar, InstanceState, Job, JobKind, JobState, OpKind, OpStatus, Operation,
    ResourceState, Runner, RunnerKind, RunnerTarget, DEFAULT_WORKSPACE,
};
use maud::{html, Markup, DOCTYPE};

use super::{urlencode, Session};
use crate::api::app::{AppSummary, AppView};

/// The frame of every page: header, navigation, who is signed in.
fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = session { meta name="cairn-csrf" content=(s.csrf); }
                title { (title) " · Cairn" }
                link rel="stylesheet" href="/ui/ui.css";
                script src="/ui/ui.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/" { "Cairn" }
                    @if let Some(s) = session {
                        nav {
                            a href="/" { "Apps" }
                            a href="/jobs" { "Jobs" }
                            a href="/runners" { "Runners" }
                            a href="/cluster" { "Cluster" }
                        }
                        form.signout method="post" action="/signout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            span.who { (s.caller.name) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// `2026-12-06 16:40:01` (UTC) from milliseconds since the epoch.
pub fn when(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `3.2 s`, `4 min 5 s`.
fn took(from: u64, to: Option<u64>) -> String {
    let Some(to) = to else {
        return "…".into();
    };
    let ms = to.saturating_sub(from);
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000)
    }
}

fn time(ms: u64) -> Markup {
    html! { time data-ms=(ms) title=(when(ms)) { (when(ms)) } }
}

pub fn kind_word(k: OpKind) -> &'static str {
    match k {
        OpKind::Build => "build",
        OpKind::Artifact => "artifact",
        OpKind::Deployment => "deployment",
        OpKind::Release => "release",
    }
}

fn kind_path(k: OpKind) -> &'static str {
    match k {
        OpKind::Build => "builds",
        OpKind::Artifact => "artifacts",
        OpKind::Deployment => "deployments",
        OpKind::Release => "releases",
    }
}

fn badge(word: &str) -> Markup {
    html! { span class=(format!("badge {word}")) { (word) } }
}

fn op_status(op: &Operation) -> Markup {
    let word = match (op.status, op.state) {
        (OpStatus::Success, ResourceState::Destroyed) => "destroyed",
        (s, _) => s.word(),
    };
    badge(word)
}

fn job_state(s: JobState) -> Markup {
    badge(s.word())
}

/// `?workspace=W` unless it is the default.
fn ws_query(workspace: &str) -> String {
    if workspace == DEFAULT_WORKSPACE {
        String::new()
    } else {
        format!("?workspace={}", urlencode(workspace))
    }
}

fn app_href(project: &str, app: &str, workspace: &str) -> String {
    format!(
        "/apps/{}/{}{}",
        urlencode(project),
        urlencode(app),
        ws_query(workspace)
    )
}

fn op_href(op: &Operation) -> String {
    format!(
        "/apps/{}/{}/{}/{}{}",
        urlencode(&op.project),
        urlencode(&op.app),
        kind_path(op.kind),
        op.sequence,
        ws_query(&op.workspace)
    )
}

pub fn error(session: Option<&Session>, status: StatusCode, message: &str) -> Markup {
    layout(
        "Error",
        session,
        html! {
            section.card.error {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p.message { (message) }
                p { a href="/" { "Back to the apps" } }
            }
        },
    )
}

pub fn sign_in(next: &str, problem: Option<&str>) -> Markup {
    layout(
        "Sign in",
        None,
        html! {
            section.card.signin {
                h1 { "Sign in" }
                p { "Paste a user token: " code { "cairn ui --token" } " prints your context's." }
                @if let Some(p) = problem { p.problem role="alert" { (p) } }
                form method="post" action="/signin" {
                    input type="hidden" name="next" value=(next);
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="off" required autofocus;
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

pub fn overview(session: &Session, apps: &[AppSummary]) -> Markup {
    layout(
        "Apps",
        Some(session),
        html! {
            h1 { "Apps" }
            @if apps.is_empty() {
                p.empty { "No apps yet. Run " code { "cairn up" } " in a directory with a cairn.hcl or waypoint.hcl." }
            } @else {
                div.scroll { table.apps {
                    thead { tr { th { "Project" } th { "App" } th { "Workspace" } th { "Released" } th { "Deployments" } th { "Last" } } }
                    tbody {
                        @for a in apps {
                            tr {
                                td { (a.project) }
                                td { a href=(app_href(&a.project, &a.app, &a.workspace)) { (a.app) } }
                                td { (a.workspace) }
                                td {
                                    @match &a.route {
                                        Some(r) => {
                                            "v" (r.primary)
                                            @if let Some((c, w)) = r.canary { " + canary v" (c) " at " (w) "%" }
                                        }
                                        None => span.muted { "—" },
                                    }
                                }
                                td { (a.active_deployments) " active" }
                                td {
                                    @if let Some(op) = &a.last {
                                        a href=(op_href(op)) { (kind_word(op.kind)) " v" (op.sequence) } " " (op_status(op)) " " (time(op.started_ms))
                                    }
                                }
                            }
                        }
                    }
                } }
            }
        },
    )
}

fn scope_word(s: &ConfigScope) -> String {
    match s {
        ConfigScope::Project(_) => "project".into(),
        ConfigScope::App { .. } => "app".into(),
        ConfigScope::Workspace { workspace, .. } => format!("workspace {workspace}"),
        ConfigScope::WorkspaceApp { workspace, .. } => format!("app in workspace {workspace}"),
    }
}

fn shown(v: &ConfigVar) -> String {
    cairn_protocol::config::shown_value(v).to_string()
}

pub fn app(session: &Session, v: &AppView) -> Markup {
    let ws = &v.workspace;
    let primary = v.route.as_ref().map(|r| r.primary);
    let canary = v.route.as_ref().and_then(|r| r.canary);
    let deployments: Vec<&Operation> = v
        .operations
        .iter()
        .rev()
        .filter(|o| o.kind == OpKind::Deployment)
        .collect();
    // The URL each deployment answers at, from its release when it has one.
    let release_url = |seq: u64| {
        v.operations
            .iter()
            .rev()
            .find(|o| {
                o.kind == OpKind::Release
                    && o.input_seq == Some(seq)
                    && o.status == OpStatus::Success
            })
            .and_then(|o| o.url.clone())
    };
    let base = format!("/apps/{}/{}", urlencode(&v.project), urlencode(&v.app));
    let released_seq = primary.or_else(|| {
        deployments
            .iter()
            .find(|d| d.status == OpStatus::Success && d.state == ResourceState::Active)
            .map(|d| d.sequence)
    });
    let logs_src = format!(
        "/api/v1/projects/{}/apps/{}/logs?workspace={}&tail=200",
        urlencode(&v.project),
        urlencode(&v.app),
        urlencode(ws)
    );
    let traffic_src = format!(
        "/api/v1/projects/{}/apps/{}/traffic?workspace={}",
        urlencode(&v.project),
        urlencode(&v.app),
        urlencode(ws)
    );
    let action_form = |seq: u64, what: &str, label: &str, class: &str| {
        html! {
            form.inline method="post" action=(format!("{base}/deployments/{seq}/{what}")) {
                input type="hidden" name="csrf" value=(session.csrf);
                input type="hidden" name="workspace" value=(ws);
                button type="submit" class=(class) data-action=(format!("{what}-v{seq}")) { (label) }
            }
        }
    };
    layout(
        &format!("{} · {}", v.app, v.project),
        Some(session),
        html! {
            p.crumbs { a href="/" { "Apps" } " / " (v.project) }
            h1 { (v.app) @if ws != DEFAULT_WORKSPACE { " " span.ws { "workspace " (ws) } } }
            @if v.workspaces.len() > 1 {
                p.workspaces { "Workspaces: "
                    @for w in &v.workspaces {
                        @if w == ws { strong { (w) } } @else { a href=(app_href(&v.project, &v.app, w)) { (w) } } " "
                    }
                }
            }
            section.card.released #released {
                h2 { "Released" }
                @match primary {
                    Some(p) => {
                        p { "Deployment " strong { "v" (p) } " takes "
                            @match canary { Some((_, w)) => { (100 - u32::from(w)) "%" }, None => { "all" } }
                            " of the requests"
                            @if let Some(u) = release_url(p) { " at " a href=(u) { (u) } }
                            "." }
                        @if let Some((c, w)) = canary {
                            p.canary { "Canary " strong { "v" (c) } " takes " (w) "% of them"
                                @if let Some(u) = release_url(c) { " (" a href=(u) { (u) } ")" } "." }
                        }
                    }
                    None => p.muted { "Nothing is released yet." },
                }
                div.chart #traffic data-src=(traffic_src) {
                    h3 { "Requests per second, by deployment (this node's ingress) " span.scale {} }
                    svg #traffic-svg viewBox="0 0 600 160" preserveAspectRatio="none" role="img" aria-label="requests per second per deployment" {}
                    p.legend #traffic-legend {}
                }
            }
            section.card #deployments {
                h2 { "Deployments" }
                @if deployments.is_empty() { p.muted { "No deployments yet." } } @else {
                    div.scroll { table {
                        thead { tr { th { "" } th { "Status" } th { "Made" } th { "By" } th { "URL" } th { "Actions" } } }
                        tbody {
                            @for d in &deployments {
                                @let live = d.status == OpStatus::Success && d.state == ResourceState::Active;
                                tr data-deployment=(d.sequence) {
                                    td { a href=(op_href(d)) { "v" (d.sequence) } }
                                    td { (op_status(d))
                                        @if primary == Some(d.sequence) { " " (badge("released")) }
                                        @if canary.map(|c| c.0) == Some(d.sequence) { " " (badge("canary")) } }
                                    td { (time(d.started_ms)) }
                                    td { (d.requested_by) }
                                    td { @if let Some(u) = &d.url { a href=(u) { (u) } } }
                                    td.actions {
                                        @if live {
                                            @if primary != Some(d.sequence) {
                                                @let older = released_seq.is_some_and(|p| d.sequence < p);
                                                (action_form(d.sequence, "release", if older { "Roll back to this" } else { "Release" }, "primary"))
                                                form.inline.canary method="post" action=(format!("{base}/deployments/{}/release", d.sequence)) {
                                                    input type="hidden" name="csrf" value=(session.csrf);
                                                    input type="hidden" name="workspace" value=(ws);
                                                    input type="number" name="weight" min="1" max="99" value=(canary.filter(|c| c.0 == d.sequence).map_or(10, |c| c.1)) aria-label=(format!("canary weight for v{}", d.sequence));
                                                    button type="submit" data-action=(format!("canary-v{}", d.sequence)) { "% canary" }
                                                }
                                            }
                                            details.destroy {
                                                summary { "Destroy…" }
                                                (action_form(d.sequence, "destroy", &format!("Destroy v{}", d.sequence), "danger"))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    } }
                }
            }
            section.card #logs-card {
                h2 { "Logs" @if let Some(s) = released_seq { " " span.muted { "v" (s) } } }
                @if released_seq.is_some() {
                    pre.logs #logs data-src=(logs_src) aria-live="polite" {}
                } @else { p.muted { "No running deployment." } }
            }
            section.card #instances {
                h2 { "Instances" }
                @if v.instances.is_empty() { p.muted { "No instances." } } @else {
                    div.scroll { table {
                        thead { tr { th { "Instance" } th { "Deployment" } th { "State" } th { "Node" } th { "Pid" } th { "Since" } } }
                        tbody { @for i in &v.instances {
                            tr {
                                td { code { (i.id) } }
                                td { "v" (i.sequence) }
                                td { (badge(match i.state { InstanceState::Connected => "connected", InstanceState::Disconnected => "disconnected" })) }
                                td { (format!("{:x}", i.node)) }
                                td { (i.pid) }
                                td { (time(i.since_ms)) }
                            }
                        } }
                    } }
                }
            }
            section.card #timeline {
                h2 { "History" }
                @if v.operations.is_empty() { p.muted { "Nothing yet." } } @else {
                    ol.timeline {
                        @for op in v.operations.iter().rev() {
                            li class=(format!("op {}", kind_word(op.kind))) {
                                div.what {
                                    a href=(op_href(op)) { (kind_word(op.kind)) " v" (op.sequence) }
                                    " " (op_status(op))
                                    @if let Some(i) = op.input_seq { span.muted { " from v" (i) } }
                                }
                                div.meta { (time(op.started_ms)) " · " (took(op.started_ms, op.completed_ms)) " · " (op.requested_by) " · " (op.plugin) " · job " a href=(format!("/jobs/{}", op.job_id)) { (op.job_id) } }
                                @if let Some(e) = &op.error { div.err { (e) } }
                            }
                        }
                    }
                }
            }
            section.card #config {
                h2 { "Config" }
                @let vars: Vec<&ConfigVar> = v.config.iter().filter(|c| !cairn_protocol::config::is_reserved(&c.name)).collect();
                @if vars.is_empty() { p.muted { "No config variables." } } @else {
                    div.scroll { table {
                        thead { tr { th { "Name" } th { "Value" } th { "Scope" } } }
                        tbody { @for c in vars {
                            tr { td { code { (c.name) } } td { code { (shown(c)) } } td { (scope_word(&c.scope)) } }
                        } }
                    } }
                }
            }
            section.card #app-jobs {
                h2 { "Jobs" }
                (jobs_table(&v.jobs))
            }
        },
    )
}

pub fn operation(session: &Session, op: &Operation) -> Markup {
    let title = format!("{} v{}", kind_word(op.kind), op.sequence);
    layout(
        &format!("{title} · {}", op.app),
        Some(session),
        html! {
            p.crumbs { a href="/" { "Apps" } " / " (op.project) " / " a href=(app_href(&op.project, &op.app, &op.workspace)) { (op.app) } }
            h1 { (title) " " (op_status(op)) }
            dl.facts {
                dt { "Started" } dd { (time(op.started_ms)) }
                dt { "Took" } dd { (took(op.started_ms, op.completed_ms)) }
                dt { "Asked by" } dd { (op.requested_by) }
                dt { "Plugin" } dd { code { (op.plugin) } }
                dt { "Job" } dd { a href=(format!("/jobs/{}", op.job_id)) { (op.job_id) } }
                @if let Some(i) = op.input_seq { dt { "From" } dd { "v" (i) } }
                @if let Some(u) = &op.url { dt { "URL" } dd { a href=(u) { (u) } } }
                dt { "Workspace" } dd { (op.workspace) }
            }
            @if let Some(e) = &op.error { section.card.error { h2 { "Error" } pre { (e) } } }
            section.card {
                h2 { "Output" }
                @if op.output_dropped > 0 { p.muted { (op.output_dropped) " earlier lines were dropped." } }
                @if op.output.is_empty() { p.muted { "No output." } } @else {
                    pre.output #output { @for l in &op.output { (l) "\n" } }
                }
            }
            @if let Some(r) = &op.result {
                section.card { h2 { "Result " span.muted { (r.type_name) } } pre.result { (pretty_json(&r.json)) } }
            }
        },
    )
}

fn pretty_json(s: &str) -> String {
    serde_json::from_str::<serde_json::Value>(s)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| s.to_string())
}

fn job_what(j: &Job) -> String {
    match &j.spec.kind {
        JobKind::Release {
            deployment: Some(d),
            weight: Some(w),
            ..
        } => format!("release v{d} ({w}%)"),
        JobKind::Release {
            deployment: Some(d),
            ..
        } => format!("release v{d}"),
        JobKind::Destroy {
            deployment: Some(d),
        } => format!("destroy v{d}"),
        k => k.name().to_string(),
    }
}

fn jobs_table(jobs: &[Job]) -> Markup {
    html! {
        @if jobs.is_empty() { p.muted { "No jobs." } } @else {
            div.scroll { table.jobs {
                thead { tr { th { "Job" } th { "What" } th { "App" } th { "State" } th { "Runner" } th { "By" } th { "Queued" } th { "Took" } } }
                tbody { @for j in jobs {
                    tr data-job=(j.id) {
                        td { a href=(format!("/jobs/{}", j.id)) { (j.id) } }
                        td { (job_what(j)) }
                        td { a href=(app_href(&j.spec.project, &j.spec.app, &j.spec.workspace)) { (j.spec.project) "/" (j.spec.app) } }
                        td { (job_state(j.state)) }
                        td { @if let Some(r) = &j.runner { code { (r) } } }
                        td { (j.requested_by) }
                        td { (time(j.queued_ms)) }
                        td { (took(j.assigned_ms.unwrap_or(j.queued_ms), j.completed_ms)) }
                    }
                } }
            } }
        }
    }
}

pub fn jobs(session: &Session, jobs: &[Job]) -> Markup {
    layout(
        "Jobs",
        Some(session),
        html! {
            h1 { "Jobs" }
            div #jobs data-refresh="2000" { (jobs_table(jobs)) }
        },
    )
}

fn target_word(t: &RunnerTarget) -> String {
    match t {
        RunnerTarget::Any => "any runner".into(),
        RunnerTarget::Id(id) => format!("runner {id}"),
        RunnerTarget::Labels(l) => format!(
            "a runner labelled {}",
            l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn job(session: &Session, j: &Job) -> Markup {
    layout(
        &format!("Job {}", j.id),
        Some(session),
        html! {
            p.crumbs { a href="/jobs" { "Jobs" } }
            h1 { "Job " (j.id) ": " (job_what(j)) " " span #job-state { (job_state(j.state)) } }
            dl.facts {
                dt { "App" } dd { a href=(app_href(&j.spec.project, &j.spec.app, &j.spec.workspace)) { (j.spec.project) "/" (j.spec.app) } " (" (j.spec.workspace) ")" }
                dt { "For" } dd { (target_word(&j.spec.target)) }
                dt { "Runner" } dd #job-runner { @if let Some(r) = &j.runner { code { (r) } } @else { span.muted { "not yet" } } }
                dt { "Asked by" } dd { (j.requested_by) }
                dt { "Queued" } dd { (time(j.queued_ms)) }
                @if let Some(c) = j.completed_ms { dt { "Ended" } dd { (time(c)) } }
                @if let Some(e) = &j.error { dt { "Error" } dd.err { (e) } }
            }
            @if !j.state.is_final() {
                form.inline #cancel method="post" action=(format!("/jobs/{}/cancel", j.id)) {
                    input type="hidden" name="csrf" value=(session.csrf);
                    button.danger type="submit" disabled[j.cancel_requested] { @if j.cancel_requested { "Cancelling…" } @else { "Cancel" } }
                }
                @if j.state == JobState::Queued {
                    p.muted #waiting { "Waiting for " (target_word(&j.spec.target)) " to take it." }
                }
            }
            section.card {
                h2 { "Output" }
                pre.output #events data-src=(format!("/api/v1/jobs/{}/events", j.id)) aria-live="polite" {}
            }
        },
    )
}

pub fn runners(session: &Session, runners: &[(Runner, bool)]) -> Markup {
    layout(
        "Runners",
        Some(session),
        html! {
            h1 { "Runners" }
            div #runners data-refresh="3000" {
                @if runners.is_empty() { p.muted { "No runners have registered." } } @else {
                    div.scroll { table {
                        thead { tr { th { "Runner" } th { "Kind" } th { "Connected" } th { "Labels" } th { "Registered" } th { "Last seen" } } }
                        tbody { @for (r, connected) in runners {
                            tr {
                                td { code { (r.id) } }
                                td { (match r.kind { RunnerKind::Cli => "a cairn command's own", RunnerKind::Agent => "standing (agent)" }) }
                                td { (badge(if *connected { "connected" } else { "disconnected" })) }
                                td { @for (k, v) in &r.labels { code { (k) "=" (v) } " " } }
                                td { (time(r.registered_ms)) }
                                td { (time(r.last_seen_ms)) }
                            }
                        } }
                    } }
                }
            }
        },
    )
}

pub fn cluster(session: &Session, members: &[MemberInfo], i: &ServerInfo) -> Markup {
    layout(
        "Cluster",
        Some(session),
        html! {
            h1 { "Cluster" }
            div #members data-refresh="3000" {
                {
                    p { "This node: " code { (format!("{:x}", i.node_id)) } ", cairn-node " (i.version) ", protocol " (i.protocol)
                        ". Applied log index " (i.raft.last_applied.map_or("—".to_string(), |i| i.to_string()))
                        @if let Some(l) = i.leader { ", leader " code { (format!("{l:x}")) } } "." }
                }
                div.scroll { table {
                    thead { tr { th { "Member" } th { "Address" } th { "Role" } th { "Log index" } th { "Last contact" } } }
                    tbody { @for m in members {
                        tr {
                            td { code { (format!("{:x}", m.id)) } @if m.leader { " " (badge("leader")) } }
                            td { (m.addr) }
                            td { (match m.role { MemberRole::Voter => "voter", MemberRole::Learner => "learner" }) }
                            td { (m.matched_index.map_or("?".to_string(), |i| i.to_string())) }
                            td { (m.last_contact_ms.map_or("—".to_string(), |ms| format!("{ms} ms ago"))) }
                        }
                    } }
                } }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(when(0), "1970-01-01 00:00:00");
        assert_eq!(when(1_796_574_001_000), "2026-12-06 16:20:01");
        assert_eq!(when(951_782_400_000), "2000-02-29 00:00:00");
    }
}
