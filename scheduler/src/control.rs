//! The control plane's whole surface, as the HTTP API sees it.
//!
//! Every API route parses its request, calls one method here, and prints
//! the answer; no scheduling logic lives in the API. [`ControlPlane`] is
//! implemented over the store by [`crate::cluster::Cluster`].

use std::future::Future;
use std::time::Duration;

use flotilla_proto::event::{Event, EventPage};
use flotilla_proto::field::FieldError;
use flotilla_proto::rollout::{Rollout, RolloutList, RolloutRequest};
use flotilla_proto::wire::{
    MachinePage, MachinePatch, MachineResource, MachineUnits, Registration, ServerList, StatePage,
    StateReport, Unit, UnitPage, UnitPut,
};
use flotilla_proto::{Machine, MachineId, UnitFileError, UnitName};

pub use crate::events::EventFilter;
use crate::quota::Quota;

/// Which page of a listing to return.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// The `nextPageToken` of the previous page, if any.
    pub token: Option<String>,
    /// At most this many items; `None` for the server's default.
    pub limit: Option<usize>,
}

/// The largest page the server returns, whatever the request asks.
pub const MAX_PAGE: usize = 1000;

/// Filters for `GET /v1/state`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateFilter {
    pub unit: Option<UnitName>,
    pub machine: Option<MachineId>,
}

/// What `PUT /v1/units/{name}` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The unit did not exist and was created (201).
    Created,
    /// The unit existed and its contents or desired state changed (204).
    Updated,
    /// The unit existed as asked already: nothing was written (204).
    Unchanged,
}

/// What can go wrong, and what it means for the caller. Each variant maps
/// to exactly one HTTP status in the API.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The unit file does not parse or validate (400); nothing was stored.
    #[error("{0}")]
    InvalidUnit(#[from] UnitFileError),
    /// The request is malformed in another way (400); nothing was stored.
    #[error("{0}")]
    InvalidRequest(String),
    /// A string a machine or operator supplied (hostname, address,
    /// metadata, reported state) is refused (400), naming the field;
    /// nothing was stored.
    #[error("{0}")]
    InvalidField(#[from] FieldError),
    /// One request is over a limit of its own (413), such as a unit file
    /// over the largest size or a machine's metadata over its quota;
    /// nothing was stored.
    #[error("{what}: {size} {unit}, over the limit of {limit} {unit}")]
    TooLarge {
        /// What is too large, e.g. `metadata of machine 0123...`.
        what: String,
        size: u64,
        limit: u64,
        /// What `size` and `limit` count: `bytes`, `keys`.
        unit: &'static str,
    },
    /// The write would take the cluster past one of its quotas (507);
    /// nothing was stored. Deleting something, or raising the quota, makes
    /// room.
    #[error(
        "the cluster's quota of {limit} {quota} would be exceeded: {used} in use, {asked} more asked for"
    )]
    QuotaExceeded {
        quota: Quota,
        limit: u64,
        used: u64,
        asked: u64,
    },
    /// The named unit, machine or template does not exist (404).
    #[error("{what} does not exist")]
    NotFound { what: String },
    /// The request conflicts with the current state (409), e.g. new
    /// contents for an existing unit without `replace`.
    #[error("{0}")]
    Conflict(String),
    /// The store cannot be reached or is too slow (503); temporary: the
    /// caller may retry. Nothing was changed, or the change is not known to
    /// have happened.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A bug or corrupt data (500).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Everything the API can ask of the control plane.
pub trait ControlPlane: Send + Sync + 'static {
    // ---- units ----

    /// Units in name order, a page at a time.
    fn list_units(
        &self,
        page: PageRequest,
    ) -> impl Future<Output = Result<UnitPage, ControlError>> + Send;

    fn get_unit(&self, name: &UnitName) -> impl Future<Output = Result<Unit, ControlError>> + Send;

    /// Creates a unit, replaces its contents, or changes its desired state.
    /// An instance (`web@1.service`) with no contents of its own is created
    /// from its template's. Validation happens before anything is written.
    fn put_unit(
        &self,
        name: &UnitName,
        put: UnitPut,
    ) -> impl Future<Output = Result<PutOutcome, ControlError>> + Send;

    /// Removes a unit, its assignment and its reported state.
    fn delete_unit(&self, name: &UnitName)
    -> impl Future<Output = Result<(), ControlError>> + Send;

    /// Waits until something under the units, assignments or states
    /// changed after store revision `index`, or `wait` passed; returns the
    /// revision now. Clients that block until units reach a state use it
    /// instead of polling.
    fn wait_for_change(
        &self,
        index: i64,
        wait: Duration,
    ) -> impl Future<Output = Result<i64, ControlError>> + Send;

    // ---- rollouts ----

    /// Starts a rolling update of units whose contents change together
    /// (`crate::rollout`): refused (409) when another running rollout
    /// holds one of them.
    fn start_rollout(
        &self,
        request: RolloutRequest,
    ) -> impl Future<Output = Result<Rollout, ControlError>> + Send;

    /// The rollouts the cluster keeps, oldest first.
    fn list_rollouts(&self) -> impl Future<Output = Result<RolloutList, ControlError>> + Send;

    /// The rollout with this id, or else the latest of the group of this
    /// name.
    fn get_rollout(&self, name: &str)
    -> impl Future<Output = Result<Rollout, ControlError>> + Send;

    // ---- observed state and machines ----

    fn list_states(
        &self,
        filter: StateFilter,
        page: PageRequest,
    ) -> impl Future<Output = Result<StatePage, ControlError>> + Send;

    fn list_machines(
        &self,
        page: PageRequest,
    ) -> impl Future<Output = Result<MachinePage, ControlError>> + Send;

    /// Sets or removes metadata keys of a live machine.
    fn patch_machine(
        &self,
        id: &MachineId,
        patch: MachinePatch,
    ) -> impl Future<Output = Result<MachineResource, ControlError>> + Send;

    /// Every live server, and which one leads.
    fn list_servers(&self) -> impl Future<Output = Result<ServerList, ControlError>> + Send;

    // ---- agents ----

    /// Registers (or re-registers) a machine on a new lease.
    fn register_machine(
        &self,
        machine: Machine,
    ) -> impl Future<Output = Result<Registration, ControlError>> + Send;

    /// Keeps a machine's lease alive; `NotFound` when the lease expired and
    /// the agent must register again.
    fn heartbeat(
        &self,
        id: &MachineId,
        lease: i64,
    ) -> impl Future<Output = Result<Registration, ControlError>> + Send;

    /// What the machine should run. With `index`, waits up to `wait` for a
    /// change after that revision (long poll).
    fn machine_units(
        &self,
        id: &MachineId,
        index: Option<i64>,
        wait: Duration,
    ) -> impl Future<Output = Result<MachineUnits, ControlError>> + Send;

    /// Records a batch of observed states from a machine's agent.
    fn report_states(
        &self,
        id: &MachineId,
        report: StateReport,
    ) -> impl Future<Output = Result<(), ControlError>> + Send;

    // ---- events ----

    /// The cluster's history, oldest first, a page at a time.
    fn list_events(
        &self,
        filter: EventFilter,
        page: PageRequest,
    ) -> impl Future<Output = Result<EventPage, ControlError>> + Send;

    /// Events written after store revision `index` that pass `filter`;
    /// waits up to `wait` for the first (long poll).
    fn follow_events(
        &self,
        filter: EventFilter,
        index: i64,
        wait: Duration,
        limit: Option<usize>,
    ) -> impl Future<Output = Result<EventPage, ControlError>> + Send;

    /// Records a change a person or tool made through the API (with the
    /// name of its credential as `actor`). Returns at once and never
    /// fails: the change is made whether or not its event is kept.
    fn record_change(&self, event: Event);
}
