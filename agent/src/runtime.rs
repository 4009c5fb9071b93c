//! The agent assembled: four tasks around one systemd and one client.
//!
//! - **lease**: registers the machine, then heartbeats at a third of the
//!   lease's TTL, each heartbeat given at most that long; registers again
//!   when a heartbeat says the lease is gone (404). Each registration is
//!   counted, so the reporter sends a full report after it. It publishes
//!   the last renewal and whether the latest attempt failed ([`Contact`]).
//! - **feed**: long-polls the machine's units (its assignments and the
//!   `Global` units that apply to it), passing the last index back so that
//!   nothing is missed. While no server answers it keeps the last set it
//!   had, so units keep running; it retries with backoff. When the lease is
//!   in doubt (a failed heartbeat or registration) it drops the poll in
//!   flight, and once the lease is alive again it asks for the whole set at
//!   once rather than waiting for a change.
//! - **reconcile**: runs a [`Reconciler`] pass whenever the feed changes,
//!   and again with backoff while a pass asks to be retried. A pass does
//!   not wait for the jobs it sends: units that arrive while others start
//!   are written and started by the next pass at once. A job that fails
//!   brings a pass that reports why; one that could not run, a retry. Nothing is
//!   reconciled before the first feed arrives: an agent that starts while
//!   every server is down changes nothing on the host. Before each pass the
//!   [`CutOff`] policy (`StopAfterCutOff=`) holds stopped the units whose
//!   limit ran out while the lease could not be renewed.
//!   Before each pass, the secrets of the container units are fetched
//!   where their versions changed and written to tmpfs ([`SecretSync`]);
//!   a unit whose secrets cannot be is left alone by that pass, which is
//!   retried with backoff.
//! - **report**: the [`Reporter`], from systemd's signals.
//! - **requests**: one per server, the [`Inspector`] taking that server's
//!   requests about units (status, journal) and answering them.
//!
//! [`Agent::stop`] ends the tasks and leaves every unit as it is; so does
//! dropping the agent.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_api::client::{Client, ClientError, ClientOptions};
use flotilla_proto::MachineId;
use flotilla_proto::backoff::Backoff;
use flotilla_proto::wire::AssignedUnit;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::container::secrets::{SECRETS_DIR, SecretSync};
use crate::credential::{self, ClusterMemory, CredentialError, DEFAULT_STATE_DIR, JoinSettings};
use crate::cut_off::{Contact, CutOff, Feed};
use crate::inspect::Inspector;
use crate::machine::{self, MACHINE_ID_FILE, MachineError};
use crate::metrics::AgentMetrics;
use crate::reconcile::{Action, Reconciler};
use crate::report::{ClientSink, DEFAULT_BATCH, Interest, Reporter, ReporterInputs};
use crate::systemd::{Closed, RUNTIME_UNIT_DIR, SystemdError, SystemdManager};
use crate::unit_dir::UnitDir;

/// How long one long poll of the feed waits for a change.
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(60);

/// How long ordinary calls to the servers (register, heartbeat, report)
/// may take before the next server is tried.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of an agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The servers, tried in order (`https://host:port`).
    pub servers: Vec<String>,
    /// Where the machine's credential is kept ([`DEFAULT_STATE_DIR`]).
    pub state_dir: PathBuf,
    /// A join token (or join string), used once when the machine has no
    /// credential yet.
    pub join_token: Option<String>,
    /// The cluster CA's certificate (PEM), when given (`--ca`).
    pub ca: Option<Vec<u8>>,
    /// The machine's metadata, which `MachineMetadata=` matches.
    pub metadata: BTreeMap<String, String>,
    /// Where unit files are written ([`RUNTIME_UNIT_DIR`]).
    pub unit_dir: PathBuf,
    /// The `flotilla` binary that container units run as their shim.
    pub shim: PathBuf,
    /// Where the secrets of container units are written
    /// ([`SECRETS_DIR`], on tmpfs).
    pub secrets_dir: PathBuf,
    /// Where the machine id is read from ([`MACHINE_ID_FILE`]).
    pub machine_id_file: PathBuf,
    /// How long state changes are gathered before they are sent.
    pub report_batch: Duration,
    /// How long one long poll of the feed waits.
    pub poll_wait: Duration,
    /// Where reconcile passes, units' states and health are counted (a
    /// default one counts for no one).
    pub metrics: AgentMetrics,
}

impl AgentConfig {
    /// Settings with every default: the given servers, no metadata, and
    /// `shim` as the binary of container units.
    pub fn new(servers: Vec<String>, shim: PathBuf) -> AgentConfig {
        AgentConfig {
            servers,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            join_token: None,
            ca: None,
            metadata: BTreeMap::new(),
            unit_dir: PathBuf::from(RUNTIME_UNIT_DIR),
            shim,
            secrets_dir: PathBuf::from(SECRETS_DIR),
            machine_id_file: PathBuf::from(MACHINE_ID_FILE),
            report_batch: DEFAULT_BATCH,
            poll_wait: DEFAULT_POLL_WAIT,
            metrics: AgentMetrics::default(),
        }
    }
}

/// Why the agent could not start, or stopped by itself.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Machine(#[from] MachineError),
    #[error("bad server settings: {0}")]
    Client(#[from] ClientError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Systemd(#[from] SystemdError),
    /// The connection to systemd was lost: restart the agent (which
    /// restarts no unit).
    #[error(transparent)]
    SystemdLost(#[from] Closed),
    #[error("an agent task ended unexpectedly: {0}")]
    Task(String),
}

/// A running agent.
pub struct Agent {
    machine: MachineId,
    shutdown: watch::Sender<bool>,
    registered: watch::Receiver<u64>,
    tasks: JoinSet<Result<(), AgentError>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("machine", &self.machine)
            .field("registrations", &*self.registered.borrow())
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Obtains the machine's credential (joining the cluster the first
    /// time, which waits for a server to answer), then starts the agent's
    /// tasks (inside the current tokio runtime) and returns;
    /// [`Agent::registered`] waits for the registration.
    pub async fn start<S: SystemdManager>(
        config: AgentConfig,
        systemd: Arc<S>,
    ) -> Result<Agent, AgentError> {
        // Fails early on a machine without a usable id.
        let machine = machine::describe(&config.machine_id_file, &config.metadata)?;
        let id = machine.id.clone();
        let (shutdown, stopped) = watch::channel(false);
        let access = credential::obtain(
            &JoinSettings {
                servers: &config.servers,
                state_dir: &config.state_dir,
                join_token: config.join_token.as_deref(),
                ca: config.ca.as_deref(),
            },
            &id,
            &mut stopped.clone(),
        )
        .await?;
        let options = ClientOptions {
            token: Some(access.token),
            trust: access.trust,
            identity: None,
        };
        let client = Client::with_options(&config.servers, options.clone())?;
        // One client per server for the requests about units (status,
        // journal): each server can only reach agents that poll it.
        let per_server = config
            .servers
            .iter()
            .map(|server| Client::with_options([server], options.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let calls = client.clone().with_timeout(CALL_TIMEOUT);
        let cluster = Arc::new(ClusterMemory::load(&config.state_dir)?);
        let changes = systemd.subscribe().await?;

        let (registered_tx, registered) = watch::channel(0u64);
        let (lease_tx, lease_ok) = watch::channel(false);
        let (contact_tx, contact_rx) = watch::channel(Contact::starting(Instant::now()));
        let (desired_tx, desired_rx) = watch::channel(None);
        let (passes_tx, passes_rx) = mpsc::channel(16);

        let mut tasks = JoinSet::new();
        tasks.spawn(keep_registered(
            calls.clone(),
            config.clone(),
            Arc::clone(&cluster),
            registered_tx,
            lease_tx,
            contact_tx,
            stopped.clone(),
        ));
        tasks.spawn(follow_feed(
            client,
            cluster,
            id.clone(),
            config.poll_wait,
            lease_ok,
            desired_tx,
            stopped.clone(),
        ));
        let inspector = Arc::new(Inspector::new(
            systemd.clone(),
            UnitDir::new(&config.unit_dir),
        ));
        for server in per_server {
            tasks.spawn(Arc::clone(&inspector).serve(server, id.clone(), stopped.clone()));
        }
        let reconciler = Reconciler::new(
            systemd.clone(),
            UnitDir::new(&config.unit_dir),
            config.shim.clone(),
        )
        .remembering()
        .with_metrics(config.metrics.clone());
        let secrets = SecretSync::new(calls.clone(), id.clone(), config.secrets_dir.clone());
        tasks.spawn(reconcile_loop(
            reconciler,
            secrets,
            desired_rx,
            contact_rx,
            passes_tx,
            stopped.clone(),
        ));
        let reporter = Reporter::new(
            systemd,
            ClientSink {
                client: calls,
                machine: id.clone(),
            },
            id.clone(),
            config.report_batch,
        )
        .with_metrics(config.metrics.clone());
        let inputs = ReporterInputs {
            changes,
            passes: passes_rx,
            registered: registered.clone(),
            shutdown: stopped,
        };
        tasks.spawn(async move { reporter.run(inputs).await.map_err(AgentError::from) });
        tracing::info!(machine = %id, servers = ?config.servers, "agent started");
        Ok(Agent {
            machine: id,
            shutdown,
            registered,
            tasks,
        })
    }

    /// The id of the machine this agent runs.
    pub fn machine_id(&self) -> &MachineId {
        &self.machine
    }

    /// Waits until the machine is registered for the first time; fails if
    /// the agent stopped by itself first.
    pub async fn registered(&mut self) -> Result<(), AgentError> {
        let mut registered = self.registered.clone();
        tokio::select! {
            r = registered.wait_for(|n| *n > 0) => {
                r.map(|_| ()).map_err(|_| AgentError::Task("the lease task ended".into()))
            }
            ended = self.tasks.join_next() => Err(task_ended(ended)),
        }
    }

    /// Waits until the agent stops by itself (it only does on failure,
    /// such as losing systemd).
    pub async fn finished(&mut self) -> AgentError {
        task_ended(self.tasks.join_next().await)
    }

    /// Stops every task and leaves the units as they are.
    pub async fn stop(mut self) -> Result<(), AgentError> {
        let _ = self.shutdown.send(true);
        let mut first_error = None;
        while let Some(ended) = self.tasks.join_next().await {
            let result = match ended {
                Ok(r) => r,
                Err(e) => Err(AgentError::Task(e.to_string())),
            };
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        tracing::info!("agent stopped; units left as they are");
        first_error.map_or(Ok(()), Err)
    }
}

fn task_ended(ended: Option<Result<Result<(), AgentError>, tokio::task::JoinError>>) -> AgentError {
    match ended {
        Some(Ok(Err(e))) => e,
        Some(Ok(Ok(()))) => AgentError::Task("a task returned".into()),
        Some(Err(e)) => AgentError::Task(e.to_string()),
        None => AgentError::Task("no task runs".into()),
    }
}

/// Resolves once shutdown is asked for (or whoever could ask is gone).
pub(crate) async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await of the
    // caller (it is not `Send`): drop it here.
    let _ = stopped.wait_for(|s| *s).await.map(|_| ());
}

/// Sleeps `delay`, or less if shutdown comes first; whether it did.
async fn sleep_or_stop(delay: Duration, stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => false,
        () = stop_requested(stopped) => true,
    }
}

/// The lease task; see the module documentation.
async fn keep_registered(
    client: Client,
    config: AgentConfig,
    cluster: Arc<ClusterMemory>,
    registered: watch::Sender<u64>,
    lease_ok: watch::Sender<bool>,
    contact: watch::Sender<Contact>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let renewed = |contact: &watch::Sender<Contact>| {
        contact.send_replace(Contact {
            renewed: Instant::now(),
            failing: false,
        });
    };
    let failed = |contact: &watch::Sender<Contact>, lease_ok: &watch::Sender<bool>| {
        lease_ok.send_replace(false);
        contact.send_if_modified(|c| !std::mem::replace(&mut c.failing, true));
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    'register: loop {
        // Read again each time: addresses may have changed.
        let machine = machine::describe(&config.machine_id_file, &config.metadata)?;
        let registration = tokio::select! {
            r = client.register_machine(&machine) => r,
            () = stop_requested(&mut stopped) => return Ok(()),
        };
        let registration = match registration {
            Ok(r) => match cluster.check(r.cluster_id) {
                Ok(()) => r,
                Err(e) => {
                    tracing::error!("{e}");
                    failed(&contact, &lease_ok);
                    if sleep_or_stop(backoff.next_delay(), &mut stopped).await {
                        return Ok(());
                    }
                    continue;
                }
            },
            Err(e) => {
                if e.status() == Some(426) {
                    tracing::error!(
                        "the servers refuse this agent's version ({e}); units are left as they are"
                    );
                } else if matches!(e.status(), Some(401 | 403)) {
                    tracing::error!(
                        "the servers refuse this machine's credential ({e}): it was revoked or the machine removed (flotilla machine remove). Units are left as they are. To join again, delete {} and start the agent with a join token",
                        config.state_dir.join(credential::CREDENTIAL_FILE).display()
                    );
                } else {
                    tracing::warn!("cannot register the machine, trying again: {e}");
                }
                failed(&contact, &lease_ok);
                if sleep_or_stop(backoff.next_delay(), &mut stopped).await {
                    return Ok(());
                }
                continue;
            }
        };
        backoff.reset();
        renewed(&contact);
        tracing::info!(
            machine = %machine.id,
            lease = registration.lease,
            ttl_ms = registration.ttl_ms,
            "machine registered"
        );
        lease_ok.send_replace(true);
        registered.send_modify(|n| *n += 1);
        let period = Duration::from_millis(registration.ttl_ms / 3).max(Duration::from_millis(50));
        // A heartbeat slower than the period is as good as lost: so a
        // cut-off is noticed within two periods of the last renewal.
        let beats = client.clone().with_timeout(period.min(CALL_TIMEOUT));
        let mut lease = registration.lease;
        loop {
            if sleep_or_stop(period, &mut stopped).await {
                return Ok(());
            }
            let beat = tokio::select! {
                r = beats.heartbeat(&machine.id, lease) => r,
                () = stop_requested(&mut stopped) => return Ok(()),
            };
            match beat {
                Ok(r) => match cluster.check(r.cluster_id) {
                    Ok(()) => {
                        lease = r.lease;
                        renewed(&contact);
                        lease_ok.send_replace(true);
                    }
                    // Not this machine's cluster: as good as no answer.
                    Err(e) => {
                        tracing::error!("{e}");
                        failed(&contact, &lease_ok);
                    }
                },
                Err(e) if e.is_not_found() => {
                    tracing::warn!("the machine's lease expired; registering again");
                    failed(&contact, &lease_ok);
                    continue 'register;
                }
                Err(e) => {
                    tracing::warn!("heartbeat failed: {e}");
                    failed(&contact, &lease_ok);
                }
            }
        }
    }
}

/// The feed task; see the module documentation.
async fn follow_feed(
    client: Client,
    cluster: Arc<ClusterMemory>,
    id: MachineId,
    wait: Duration,
    mut lease_ok: watch::Receiver<bool>,
    desired: watch::Sender<Option<Feed>>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut index = None;
    // Whether the next poll asks for the whole set at once.
    let mut afresh = true;
    loop {
        tokio::select! {
            r = lease_ok.wait_for(|ok| *ok) => {
                if r.is_err() {
                    return Ok(());
                }
            }
            () = stop_requested(&mut stopped) => return Ok(()),
        }
        let asked_at = Instant::now();
        let since = if afresh { None } else { index };
        let polled = tokio::select! {
            r = client.machine_units(&id, since, wait) => r,
            r = lease_ok.wait_for(|ok| !*ok) => {
                if r.is_err() {
                    return Ok(());
                }
                tracing::debug!("the lease is in doubt: asking afresh once it is back");
                afresh = true;
                continue;
            }
            () = stop_requested(&mut stopped) => return Ok(()),
        };
        let polled = polled.map_err(Refused::Call).and_then(|units| {
            cluster
                .check(units.cluster_id)
                .map(|()| units)
                .map_err(Refused::OtherCluster)
        });
        match polled {
            Ok(units) => {
                backoff.reset();
                afresh = false;
                index = Some(units.index);
                desired.send_modify(|current| {
                    if current.as_ref().map(|f| &f.units) != Some(&units.units) {
                        tracing::debug!(
                            units = units.units.len(),
                            index = units.index,
                            "feed changed"
                        );
                    }
                    *current = Some(Feed {
                        units: units.units,
                        asked_at,
                    });
                });
            }
            Err(e) => {
                match e {
                    Refused::OtherCluster(e) => tracing::error!("{e}"),
                    Refused::Call(e) => {
                        tracing::warn!(
                            "cannot read this machine's units, keeping the last set: {e}"
                        )
                    }
                }
                afresh = true;
                if sleep_or_stop(backoff.next_delay(), &mut stopped).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Why a set of units was not taken.
enum Refused {
    Call(ClientError),
    OtherCluster(credential::OtherCluster),
}

/// The reconcile task; see the module documentation.
async fn reconcile_loop<S: SystemdManager>(
    mut reconciler: Reconciler<S>,
    mut secrets: SecretSync,
    mut desired: watch::Receiver<Option<Feed>>,
    mut contact: watch::Receiver<Contact>,
    passes: mpsc::Sender<Interest>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), AgentError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut policy = CutOff::default();
    // The units of the last pass that applied everything.
    let mut done: Option<Vec<AssignedUnit>> = None;
    let mut retry_at: Option<Instant> = None;
    // What the reporter was last told, brought up to date as jobs end.
    let mut told: Option<(Interest, BTreeMap<String, String>)> = None;
    loop {
        let feed = desired.borrow_and_update().clone();
        let lease = *contact.borrow_and_update();
        let now = Instant::now();
        let mut wake_at = None;
        if let Some(feed) = feed {
            let applied = policy.apply(&feed, lease, now);
            wake_at = applied.wake_at;
            let due = retry_at.is_some_and(|at| at <= now);
            if due || (retry_at.is_none() && done.as_ref() != Some(&applied.units)) {
                retry_at = None;
                // The secrets of container units first, so that a unit
                // the pass starts finds them.
                // Units whose secrets could not be fetched or written are
                // left alone by the pass, which is then retried.
                let held = tokio::select! {
                    held = secrets.sync(&applied.units) => held,
                    () = stop_requested(&mut stopped) => return Ok(()),
                };
                reconciler.hold(held);
                let outcome = tokio::select! {
                    r = reconciler.reconcile_overlapping(&applied.units) => r,
                    () = stop_requested(&mut stopped) => return Ok(()),
                };
                match outcome {
                    Ok(pass) => {
                        if !pass.plan.is_empty() || !pass.plan.refused.is_empty() {
                            tracing::info!(
                                units = pass.units.len(),
                                written = pass.plan.write.len(),
                                removed = pass.removed.len(),
                                jobs = pass.plan.jobs.len(),
                                refused = pass.plan.refused.len(),
                                reloaded = pass.plan.reload,
                                "reconciled"
                            );
                        }
                        if passes.send(Interest::from(&pass)).await.is_err() {
                            return Ok(());
                        }
                        told = Some((
                            Interest {
                                units: pass.units.clone(),
                                removed: Vec::new(),
                            },
                            pass.hashes.clone(),
                        ));
                        if pass.action == Action::AwaitChange {
                            backoff.reset();
                            done = Some(applied.units);
                        } else {
                            tracing::warn!("some changes did not apply; reconciling again");
                            done = None;
                            retry_at = Some(Instant::now() + backoff.next_delay());
                        }
                    }
                    Err(e) => {
                        tracing::warn!("reconcile pass failed, trying again: {e}");
                        done = None;
                        retry_at = Some(Instant::now() + backoff.next_delay());
                    }
                }
                // Look again at once: the feed or the contact may have
                // changed during the pass.
                continue;
            }
        }
        // Until the feed or the contact changes, a retry is due, or a
        // unit's cut-off limit runs out.
        let until = match (retry_at, wake_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let sleep = async {
            match until {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = desired.changed() => {
                if r.is_err() {
                    return Ok(());
                }
            }
            r = contact.changed() => {
                if r.is_err() {
                    return Ok(());
                }
            }
            () = sleep => {}
            jobs = reconciler.jobs_finished(), if reconciler.has_jobs() => {
                // The units whose jobs ended now run what they were
                // started with: the reporter says so.
                if let Some((interest, hashes)) = &mut told {
                    reconciler.refresh(&mut interest.units, hashes);
                    if passes.send(interest.clone()).await.is_err() {
                        return Ok(());
                    }
                }
                if jobs.retry {
                    tracing::warn!("some jobs did not run; reconciling again");
                    retry_at.get_or_insert_with(|| Instant::now() + backoff.next_delay());
                    done = None;
                } else if jobs.failed {
                    // A pass reports why (and starts nothing again).
                    done = None;
                }
            }
            () = stop_requested(&mut stopped) => return Ok(()),
        }
    }
}
