//! The leader's side: one task per source, while this server leads. Each
//! fetches its branch every interval; a new commit that reads and checks
//! as a directory of units is applied with `flotilla apply`'s semantics,
//! every change attributed to `sync:NAME@COMMIT` in the events and the
//! audit log; a commit that does not is refused (nothing changes, the
//! last good commit keeps running) and reported. Between commits, the
//! units the source owns are checked for drift from what it last applied:
//! put back (`drift: revert`) or reported (`drift: warn`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flotilla_proto::bundle::{self, Wanted};
use flotilla_proto::event::{Event, EventKind};
use flotilla_proto::rollout::RolloutState;
use flotilla_proto::rollout_groups::{self, Groups};
use flotilla_proto::sync::{
    CommitAt, DriftMode, DriftSeen, Drifted, Source, SourceStatus, SyncChanges, SyncFailure, actor,
};
use flotilla_proto::trust::{AuditEntry, Role};
use flotilla_proto::wire::UnitPut;
use flotilla_proto::{DesiredState, UnitName};
use flotilla_scheduler::control::{ControlError, ControlPlane, MAX_PAGE, PageRequest};
use flotilla_scheduler::secrets::Secrets;
use flotilla_scheduler::trust::{AuditLog, now_ms};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::git::{self, TreeLimits};
use crate::plan::{self, Change, Have};
use crate::signed;
use crate::sources::Sources;
use crate::transport::Access;

/// How the leader follows its sources.
#[derive(Debug, Clone)]
pub struct FollowConfig {
    /// Where each source's cache repository is kept (`NAME.git`).
    pub cache_dir: PathBuf,
    /// A fetch that takes longer is given up (and tried again at the next
    /// interval).
    pub fetch_timeout: Duration,
    /// How much of a commit is read.
    pub tree: TreeLimits,
    /// How often the list of sources is read, to start, change and stop
    /// their tasks.
    pub poll: Duration,
}

impl FollowConfig {
    /// The defaults, with caches under `cache_dir`.
    pub fn new(cache_dir: PathBuf) -> FollowConfig {
        FollowConfig {
            cache_dir,
            fetch_timeout: Duration::from_secs(60),
            tree: TreeLimits::default(),
            poll: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

/// `flotilla_sync_drifted_units{source}`.
#[derive(Debug, Clone, Default)]
pub struct SyncMetrics {
    drifted: Family<SourceLabel, Gauge>,
}

impl SyncMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "flotilla_sync_drifted_units",
            "Units a git source owns that differ from its last applied commit (changed by hand), as last checked by the leader",
            self.drifted.clone(),
        );
    }

    fn set(&self, source: &str, n: usize) {
        self.drifted
            .get_or_create(&SourceLabel {
                source: source.to_owned(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn forget(&self, source: &str) {
        self.drifted.remove(&SourceLabel {
            source: source.to_owned(),
        });
    }
}

struct Ctx<C> {
    control: Arc<C>,
    sources: Sources,
    /// The secrets sources name as their credentials.
    secrets: Arc<Secrets>,
    audit: AuditLog,
    config: FollowConfig,
    metrics: SyncMetrics,
}

/// Follows every source until `stop` turns true (this server stops
/// leading, or shuts down); then ends their tasks.
pub async fn follow<C: ControlPlane>(
    control: Arc<C>,
    sources: Sources,
    secrets: Arc<Secrets>,
    audit: AuditLog,
    config: FollowConfig,
    metrics: SyncMetrics,
    mut stop: watch::Receiver<bool>,
) {
    let poll = config.poll;
    let ctx = Arc::new(Ctx {
        control,
        sources,
        secrets,
        audit,
        config,
        metrics,
    });
    let mut running: HashMap<String, (Source, JoinHandle<()>)> = HashMap::new();
    let mut swept = false;
    loop {
        match ctx.sources.definitions().await {
            Ok(defs) => {
                let known: BTreeSet<String> = defs.iter().map(|s| s.name.clone()).collect();
                if !swept {
                    // Caches of sources removed while another server led.
                    sweep_caches(&ctx.config, &known);
                    swept = true;
                }
                let wanted: BTreeMap<String, Source> = defs
                    .into_iter()
                    .filter(|s| !s.paused)
                    .map(|s| (s.name.clone(), s))
                    .collect();
                running.retain(|name, (source, task)| {
                    let keep = wanted.get(name) == Some(source) && !task.is_finished();
                    if !keep {
                        task.abort();
                        ctx.metrics.forget(name);
                        if !known.contains(name) {
                            forget_cache(&ctx.config, name);
                        }
                    }
                    keep
                });
                for (name, source) in wanted {
                    running.entry(name).or_insert_with(|| {
                        let task = tokio::spawn(run(Arc::clone(&ctx), source.clone()));
                        (source, task)
                    });
                }
            }
            Err(e) => tracing::warn!("cannot read the git sources: {e}"),
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    for (name, (_, task)) in running {
        task.abort();
        ctx.metrics.forget(&name);
    }
}

async fn run<C: ControlPlane>(ctx: Arc<Ctx<C>>, source: Source) {
    loop {
        if let Err(e) = sync_once(&ctx, &source).await {
            tracing::warn!(source = source.name, "git source: {e}");
        }
        tokio::time::sleep(source.interval).await;
    }
}

/// Interrupts a fetch when dropped: when the fetch is given up, and when
/// the source's task is ended (this server stops leading or shuts down,
/// the source is paused or removed) while the fetch runs on the blocking
/// pool.
struct Interrupt(Arc<AtomicBool>);

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How `source` is reached: its credentials read from the cluster's
/// secrets (at each fetch, so that a new value is used at once).
async fn access(secrets: &Secrets, source: &Source) -> Result<Access, String> {
    let Some(name) = &source.credentials else {
        return Access::of(source, None);
    };
    let value = secrets
        .values(&[name])
        .await
        .map_err(|e| format!("credentials: {e}"))?
        .pop()
        .ok_or_else(|| format!("credentials: secret {name} does not exist"))?;
    let bytes = flotilla_proto::secret::decode_value(&value.value)
        .map_err(|e| format!("credentials: secret {name}: {e}"))?;
    Access::of(source, Some(&bytes))
}

/// Fetches the source's branch, giving up after the fetch timeout.
async fn fetch(
    config: &FollowConfig,
    secrets: &Secrets,
    source: &Source,
) -> Result<String, String> {
    let access = access(secrets, source).await?;
    let cache = cache_of(config, &source.name);
    let interrupt = Interrupt(Arc::new(AtomicBool::new(false)));
    let flag = Arc::clone(&interrupt.0);
    let (repo, branch) = (source.repo.clone(), source.branch.clone());
    let task =
        tokio::task::spawn_blocking(move || git::fetch(&cache, &repo, &branch, &access, &flag));
    match tokio::time::timeout(config.fetch_timeout, task).await {
        Ok(Ok(result)) => result.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(format!("the fetch failed: {e}")),
        Err(_) => Err(format!(
            "the fetch took longer than {}: given up",
            flotilla_proto::duration::format_timespan(config.fetch_timeout)
        )),
    }
}

fn cache_of(config: &FollowConfig, name: &str) -> PathBuf {
    config.cache_dir.join(format!("{name}.git"))
}

/// Checks that `commit` is signed by one of the source's signers, when
/// it lists any.
async fn check_signed(config: &FollowConfig, source: &Source, commit: &str) -> Result<(), String> {
    let Some(signers) = source.signers.clone() else {
        return Ok(());
    };
    let cache = cache_of(config, &source.name);
    let commit = commit.to_owned();
    let signer = tokio::task::spawn_blocking(move || signed::verify(&cache, &commit, &signers))
        .await
        .map_err(|e| format!("checking the commit's signature failed: {e}"))?
        .map_err(|e| format!("only commits signed by the source's signers are applied, and {e}"))?;
    tracing::debug!(
        source = source.name,
        signer,
        "commit signed by a listed key"
    );
    Ok(())
}

/// A commit read as a directory of units.
struct Read {
    wanted: BTreeMap<String, Wanted>,
    /// The units of its `flotilla.yaml` rollout groups.
    groups: Groups,
}

/// Reads and checks commit `commit` as a directory of units.
async fn read_commit(config: &FollowConfig, source: &Source, commit: &str) -> Result<Read, String> {
    let cache = cache_of(config, &source.name);
    let (commit, path, limits) = (commit.to_owned(), source.path.clone(), config.tree);
    let root = source.path.clone();
    tokio::task::spawn_blocking(move || {
        let files = git::read_tree(&cache, &commit, &path, &limits).map_err(|e| e.to_string())?;
        let found = bundle::read(&root, &files).map_err(|e| e.to_string())?;
        if found.units.len() > limits.max_units {
            return Err(format!(
                "the commit asks for {} units, over the limit of {} for one source",
                found.units.len(),
                limits.max_units
            ));
        }
        let names: Vec<UnitName> = found.units.keys().cloned().collect();
        let manifest = if root.is_empty() {
            bundle::MANIFEST.to_owned()
        } else {
            format!("{root}/{}", bundle::MANIFEST)
        };
        let groups = rollout_groups::manifest_groups(&manifest, &found.rollouts, &names)?;
        Ok(Read {
            wanted: found
                .units
                .into_iter()
                .map(|(name, w)| (name.to_string(), w))
                .collect(),
            groups,
        })
    })
    .await
    .map_err(|e| format!("reading the commit failed: {e}"))?
}

/// Every unit of the cluster, by name.
async fn cluster_units<C: ControlPlane>(
    control: &C,
) -> Result<BTreeMap<String, (Have, String)>, ControlError> {
    let mut out = BTreeMap::new();
    let mut token = None;
    loop {
        let page = control
            .list_units(PageRequest {
                token,
                limit: Some(MAX_PAGE),
            })
            .await?;
        for u in page.units {
            let have = Have {
                hash: u.hash,
                desired: u.desired_state,
            };
            out.insert(u.name, (have, u.text));
        }
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => return Ok(out),
        }
    }
}

/// One sync of one source: fetch, apply a new commit or refuse it, check
/// drift; the outcome goes to the source's status.
async fn sync_once<C: ControlPlane>(ctx: &Ctx<C>, source: &Source) -> Result<(), String> {
    let name = &source.name;
    let mut status = ctx
        .sources
        .status(name)
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let fetched = match fetch(&ctx.config, &ctx.secrets, source).await {
        Ok(commit) => commit,
        Err(message) => {
            status.last_error = Some(SyncFailure {
                at_ms: now_ms(),
                commit: None,
                message: format!(
                    "cannot fetch branch {} of {}: {message}",
                    source.branch, source.repo
                ),
            });
            return ctx
                .sources
                .write_status(name, &status)
                .await
                .map_err(|e| e.to_string());
        }
    };
    status.last_fetched = Some(CommitAt {
        commit: fetched.clone(),
        at_ms: now_ms(),
    });
    if status
        .last_error
        .as_ref()
        .is_some_and(|e| e.commit.is_none())
    {
        status.last_error = None;
    }
    let applied = status.last_applied.as_ref().map(|c| c.commit.clone());
    let refused = status.last_error.as_ref().and_then(|e| e.commit.clone());
    let mut target = None;
    if applied.as_deref() != Some(fetched.as_str()) && refused.as_deref() != Some(fetched.as_str())
    {
        let read = match check_signed(&ctx.config, source, &fetched).await {
            Ok(()) => match read_commit(&ctx.config, source, &fetched).await {
                Ok(read) => owned_elsewhere(ctx, name, &read.wanted)
                    .await
                    .map(|()| read),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        match read {
            Ok(read) => target = Some((fetched.clone(), read, true)),
            Err(message) => refuse(ctx, name, &mut status, &fetched, message),
        }
    }
    if target.is_none()
        && let Some(commit) = applied
    {
        match read_commit(&ctx.config, source, &commit).await {
            Ok(read) => target = Some((commit, read, false)),
            Err(e) => tracing::warn!(
                source = name,
                "cannot read the last applied commit {commit} to check drift: {e}"
            ),
        }
    }
    let Some((commit, Read { wanted, groups }, new)) = target else {
        return ctx
            .sources
            .write_status(name, &status)
            .await
            .map_err(|e| e.to_string());
    };
    let cluster = cluster_units(&*ctx.control)
        .await
        .map_err(|e| e.to_string())?;
    let mut have: BTreeMap<String, Have> = cluster
        .iter()
        .map(|(n, (h, _))| (n.clone(), h.clone()))
        .collect();
    // Units a rollout of the contents this commit wants holds: running,
    // they get them wave by wave; failed, they wait for a new commit.
    // Neither is a change to make nor drift.
    let held = rolling(&*ctx.control, &wanted)
        .await
        .map_err(|e| e.to_string())?;
    for unit in held.units.keys() {
        if let (Some(h), Some(w)) = (have.get_mut(unit), wanted.get(unit)) {
            h.hash = w.hash.clone();
        }
    }
    let drifted = plan::drift(&status.owned, &have);
    let drifted_names: BTreeSet<&str> = drifted.iter().map(|d| d.unit.as_str()).collect();
    let mut changes = plan::changes(
        &wanted,
        &have,
        (new && source.prune).then_some(&status.owned),
    );
    let new_owned = plan::owned(&wanted);
    if new {
        if source.drift == DriftMode::Warn {
            // Units changed by hand that this commit does not change stay
            // as they are.
            changes.retain(|c| {
                !drifted_names.contains(c.unit())
                    || status.owned.get(c.unit()) != new_owned.get(c.unit())
            });
        }
    } else if source.drift == DriftMode::Revert {
        changes.retain(|c| drifted_names.contains(c.unit()));
    } else {
        changes.clear();
    }
    let who = actor(name, &commit);
    let (done, failed) = apply(ctx, name, &who, &wanted, &groups, &have, &changes).await;
    let left: Vec<Drifted> = drifted
        .iter()
        .filter(|d| !done.iter().any(|c| c.unit() == d.unit))
        .cloned()
        .collect();
    // Reported when some were put back (each a new hand change), or when
    // those left differ from the last report.
    if !drifted.is_empty() && (left.len() < drifted.len() || status.drifted != left) {
        let reverted = left.is_empty();
        for d in &drifted {
            let put_back = !left.contains(d);
            let detail = format!(
                "changed by hand ({}) from source {name}'s commit {}: {}",
                d.how,
                git::short(&commit),
                if put_back {
                    "put back"
                } else {
                    "left as it is"
                }
            );
            if let Ok(unit) = UnitName::parse(&d.unit) {
                ctx.control.record_change(
                    Event::new(EventKind::UnitDrifted, now_ms())
                        .unit(&unit)
                        .actor(who.clone())
                        .detail(detail),
                );
            }
        }
        status.last_drift = Some(DriftSeen {
            at_ms: now_ms(),
            units: drifted.clone(),
            reverted,
        });
    }
    status.drifted = left;
    ctx.metrics.set(name, status.drifted.len());
    let summary = summarize(&done);
    match failed {
        None if new => {
            status.last_applied = Some(CommitAt {
                commit: commit.clone(),
                at_ms: now_ms(),
            });
            status.owned = new_owned;
            status.last_changes = Some(summary);
            status.last_error = None;
        }
        None => {
            if !summary.is_empty() {
                status.last_changes = Some(summary);
            }
        }
        Some(e) => {
            // The source owns what it made; the commit is not applied
            // yet, and is tried again at the next sync (not refused: the
            // cluster, not the commit, said no).
            for change in &done {
                let unit = change.unit();
                match new_owned.get(unit) {
                    Some(o) if new => {
                        status.owned.insert(unit.to_owned(), o.clone());
                    }
                    _ if matches!(change, Change::Destroy { .. }) => {
                        status.owned.remove(unit);
                    }
                    _ => {}
                }
            }
            if !summary.is_empty() {
                status.last_changes = Some(summary);
            }
            status.last_error = Some(SyncFailure {
                at_ms: now_ms(),
                commit: None,
                message: format!(
                    "applying commit {} stopped at a change the cluster refused: {e}",
                    git::short(&commit)
                ),
            });
        }
    }
    if status.last_error.is_none()
        && let Some(failure) = held.failed
    {
        status.last_error = Some(SyncFailure {
            at_ms: now_ms(),
            commit: None,
            message: format!(
                "{failure}; the units it did not change keep their old contents until a new commit"
            ),
        });
    }
    ctx.sources
        .write_status(name, &status)
        .await
        .map_err(|e| e.to_string())
}

/// The units a rollout of the contents `wanted` asks for holds, and why
/// the latest of those that failed did.
#[derive(Debug, Default)]
struct Held {
    units: BTreeMap<String, RolloutState>,
    failed: Option<String>,
}

/// Finds what [`Held`] says from the cluster's rollouts (the latest of a
/// unit counts).
async fn rolling<C: ControlPlane>(
    control: &C,
    wanted: &BTreeMap<String, Wanted>,
) -> Result<Held, ControlError> {
    let list = control.list_rollouts().await?;
    let mut held = Held::default();
    for r in &list.rollouts {
        let mut ours = false;
        for u in &r.units {
            let unit = u.name.to_string();
            if wanted.get(&unit).is_some_and(|w| w.hash == u.new_hash) {
                ours = true;
                match r.state {
                    RolloutState::Succeeded => held.units.remove(&unit),
                    state => held.units.insert(unit, state),
                };
            }
        }
        if ours && r.state == RolloutState::Failed {
            held.failed = Some(format!(
                "rollout {} of {} failed: {}",
                r.id,
                r.group,
                r.failure.as_deref().unwrap_or("no reason recorded")
            ));
        }
    }
    if !held.units.values().any(|s| *s == RolloutState::Failed) {
        held.failed = None;
    }
    Ok(held)
}

/// Refuses a commit when a unit it names is owned by another source.
async fn owned_elsewhere<C: ControlPlane>(
    ctx: &Ctx<C>,
    name: &str,
    wanted: &BTreeMap<String, Wanted>,
) -> Result<(), String> {
    let statuses = ctx.sources.statuses().await.map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    for (other, status) in statuses.iter().filter(|(other, _)| *other != name) {
        for unit in wanted.keys().filter(|u| status.owned.contains_key(*u)) {
            errors.push(format!("unit {unit} belongs to git source {other}"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// Records that commit `commit` was refused: in the status, as an event
/// and in the log.
fn refuse<C: ControlPlane>(
    ctx: &Ctx<C>,
    name: &str,
    status: &mut SourceStatus,
    commit: &str,
    message: String,
) {
    tracing::warn!(source = name, commit, "commit refused: {message}");
    ctx.control.record_change(
        Event::new(EventKind::SyncRefused, now_ms())
            .actor(actor(name, commit))
            .detail(format!(
                "source {name} refused commit {}, nothing was changed: {message}",
                git::short(commit)
            )),
    );
    status.last_error = Some(SyncFailure {
        at_ms: now_ms(),
        commit: Some(commit.to_owned()),
        message,
    });
}

/// Makes `changes`, each attributed to `who`; stops at the first that
/// fails. Launched units that get new contents together (`groups`, or
/// instances of one template) are rolled out in waves, after the other
/// changes. Returns those made, and the failure.
async fn apply<C: ControlPlane>(
    ctx: &Ctx<C>,
    name: &str,
    who: &str,
    wanted: &BTreeMap<String, Wanted>,
    groups: &Groups,
    have: &BTreeMap<String, Have>,
    changes: &[Change],
) -> (Vec<Change>, Option<ControlError>) {
    let launched = |unit: &str| {
        have.get(unit)
            .is_some_and(|h| h.desired == DesiredState::Launched)
            && wanted
                .get(unit)
                .is_some_and(|w| w.desired == DesiredState::Launched)
    };
    let replaced: Vec<(UnitName, String)> = changes
        .iter()
        .filter(|c| matches!(c, Change::Replace { .. }) && launched(c.unit()))
        .filter_map(|c| {
            let unit = UnitName::parse(c.unit()).ok()?;
            Some((unit, wanted.get(c.unit())?.text.clone()))
        })
        .collect();
    let (rollouts, _) = rollout_groups::group(replaced, &|u| groups.get(u).cloned());
    let rolled: BTreeSet<String> = rollouts
        .iter()
        .flat_map(|r| r.units.iter().map(|u| u.name.to_string()))
        .collect();
    let mut done = Vec::new();
    for change in changes {
        if rolled.contains(change.unit()) {
            continue;
        }
        let Ok(unit) = UnitName::parse(change.unit()) else {
            continue;
        };
        let (put, kind, detail) = match change {
            Change::Create { .. } | Change::Replace { .. } => {
                let Some(w) = wanted.get(change.unit()) else {
                    continue;
                };
                let create = matches!(change, Change::Create { .. });
                let put = UnitPut {
                    desired_state: Some(w.desired),
                    text: Some(w.text.clone()),
                    replace: !create,
                    ..UnitPut::default()
                };
                let (kind, what) = if create {
                    (EventKind::UnitCreated, "contents given")
                } else {
                    (EventKind::UnitChanged, "new contents")
                };
                (
                    Some(put),
                    kind,
                    format!("{what}, desired state {}", w.desired),
                )
            }
            Change::State { to, .. } => {
                let put = UnitPut {
                    desired_state: Some(*to),
                    ..UnitPut::default()
                };
                (
                    Some(put),
                    EventKind::UnitChanged,
                    format!("desired state {to}"),
                )
            }
            Change::Destroy { .. } => (None, EventKind::UnitDestroyed, "pruned".to_owned()),
        };
        let (result, method, status) = match put {
            Some(put) => {
                let result = ctx.control.put_unit(&unit, put).await.map(|_| ());
                let status = if matches!(change, Change::Create { .. }) {
                    201
                } else {
                    204
                };
                (result, "PUT", status)
            }
            None => (ctx.control.delete_unit(&unit).await, "DELETE", 204),
        };
        let entry = |status: u16| AuditEntry {
            at_ms: now_ms(),
            actor_id: format!("sync:{name}"),
            actor_name: who.to_owned(),
            role: Role::Operator,
            action: format!("{method} /v1/units/{unit}"),
            target: format!("units/{unit}"),
            status,
            peer: String::new(),
        };
        match result {
            Ok(()) => {
                ctx.control.record_change(
                    Event::new(kind, now_ms())
                        .unit(&unit)
                        .actor(who.to_owned())
                        .detail(detail),
                );
                if let Err(e) = ctx.audit.record(entry(status)).await {
                    tracing::error!("cannot record a change in the audit log: {e}");
                }
                done.push(change.clone());
            }
            Err(e) => {
                if let Err(e) = ctx.audit.record(entry(http_status(&e))).await {
                    tracing::error!("cannot record a change in the audit log: {e}");
                }
                return (done, Some(e));
            }
        }
    }
    for request in rollouts {
        let units: Vec<String> = request.units.iter().map(|u| u.name.to_string()).collect();
        let result = ctx.control.start_rollout(request).await;
        let entry = |status: u16| AuditEntry {
            at_ms: now_ms(),
            actor_id: format!("sync:{name}"),
            actor_name: who.to_owned(),
            role: Role::Operator,
            action: "POST /v1/rollouts".to_owned(),
            target: format!("units/{}", units.join(",")),
            status,
            peer: String::new(),
        };
        match result {
            Ok(rollout) => {
                ctx.control.record_change(
                    Event::new(EventKind::RolloutStarted, now_ms())
                        .actor(who.to_owned())
                        .detail(format!(
                            "rollout {} of {}: {} in {} waves of at most {}",
                            rollout.id,
                            rollout.group,
                            units.join(" "),
                            rollout.waves,
                            rollout.settings.max_parallel
                        )),
                );
                if let Err(e) = ctx.audit.record(entry(201)).await {
                    tracing::error!("cannot record a change in the audit log: {e}");
                }
                done.extend(units.into_iter().map(|unit| Change::Replace { unit }));
            }
            Err(e) => {
                if let Err(e) = ctx.audit.record(entry(http_status(&e))).await {
                    tracing::error!("cannot record a change in the audit log: {e}");
                }
                return (done, Some(e));
            }
        }
    }
    (done, None)
}

/// The status the API would have answered `e` with, for the audit log.
fn http_status(e: &ControlError) -> u16 {
    match e {
        ControlError::InvalidUnit(_)
        | ControlError::InvalidRequest(_)
        | ControlError::InvalidField(_) => 400,
        ControlError::NotFound { .. } => 404,
        ControlError::Conflict(_) => 409,
        ControlError::TooLarge { .. } => 413,
        ControlError::Unavailable(_) => 503,
        ControlError::QuotaExceeded { .. } => 507,
        ControlError::Internal(_) => 500,
    }
}

fn summarize(done: &[Change]) -> SyncChanges {
    let mut s = SyncChanges::default();
    for c in done {
        let unit = c.unit().to_owned();
        match c {
            Change::Create { .. } => s.created.push(unit),
            Change::Replace { .. } => s.replaced.push(unit),
            Change::State { .. } => s.state_changed.push(unit),
            Change::Destroy { .. } => s.destroyed.push(unit),
        }
    }
    s
}

/// Removes the cache repositories of sources that are not in `known`.
fn sweep_caches(config: &FollowConfig, known: &BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(&config.cache_dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".git")) else {
            continue;
        };
        if !known.contains(name) {
            forget_cache(config, name);
        }
    }
}

/// Removes the cache repository of a source that was removed.
pub fn forget_cache(config: &FollowConfig, name: &str) {
    let dir = cache_of(config, name);
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&dir)
    {
        tracing::warn!("cannot remove {}: {e}", dir.display());
    }
}
