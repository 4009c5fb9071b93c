//! The one table of routes: the router is built from it, with who may call
//! each ([`Access`]) and whether calls are audited; the OpenAPI test checks
//! the document against it and against the live router, and the security
//! test checks docs/security.md's table against it.

use axum::routing::{MethodFilter, MethodRouter, on};
use flotilla_proto::trust::Role;
use flotilla_scheduler::control::ControlPlane;

use super::{
    AppState, agent, events, fleet, inspect, machines, meta, metrics, rollouts, secrets, servers,
    state, sync, trust, ui, units, watch,
};

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HttpMethod {
    Get,
    Put,
    Post,
    Patch,
    Delete,
}

impl HttpMethod {
    /// Every method the API uses, to probe a path with the others.
    pub const ALL: [HttpMethod; 5] = [
        HttpMethod::Get,
        HttpMethod::Put,
        HttpMethod::Post,
        HttpMethod::Patch,
        HttpMethod::Delete,
    ];

    /// The method's name, upper case, as HTTP spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Put => "PUT",
            HttpMethod::Post => "POST",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            HttpMethod::Get => MethodFilter::GET,
            HttpMethod::Put => MethodFilter::PUT,
            HttpMethod::Post => MethodFilter::POST,
            HttpMethod::Patch => MethodFilter::PATCH,
            HttpMethod::Delete => MethodFilter::DELETE,
        }
    }
}

/// What a route does: one variant per handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    ListUnits,
    GetUnit,
    PutUnit,
    DeleteUnit,
    ListStates,
    ListMachines,
    PatchMachine,
    ListServers,
    AddServer,
    RemoveServer,
    Watch,
    RegisterMachine,
    Heartbeat,
    MachineUnits,
    ReportStates,
    Join,
    RemoveMachine,
    WhoAmI,
    ListTokens,
    CreateToken,
    RevokeToken,
    CreateCert,
    Audit,
    Ca,
    OpenApi,
    Health,
    UnitStatus,
    UnitJournal,
    AgentRequests,
    ListSecrets,
    PutSecret,
    DeleteSecret,
    UnitSecrets,
    AgentReply,
    ListSyncSources,
    GetSyncSource,
    PutSyncSource,
    PauseSyncSource,
    ResumeSyncSource,
    DeleteSyncSource,
    FleetDiscovery,
    FleetListUnits,
    FleetGetUnit,
    FleetPutUnit,
    FleetDeleteUnit,
    FleetListStates,
    FleetGetState,
    FleetListMachines,
    FleetPatchMachines,
    StartRollout,
    ListRollouts,
    GetRollout,
    // The cluster's history.
    Events,
    Metrics,
    // The web console's session.
    SignIn,
    SignOut,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Anyone, with no credential: health, the OpenAPI document and the
    /// cluster CA's certificate (all public).
    Public,
    /// Any valid credential.
    Authenticated,
    /// A person's or tool's credential with at least this role.
    AtLeast(Role),
    /// A machine credential, acting as its own machine only (the route's
    /// `{id}`, or the machine in the body).
    OwnMachine,
    /// A join token.
    Join,
    /// A metrics token (Prometheus), or any person's or tool's credential.
    Metrics,
}

impl Access {
    /// Whether a credential of `role` may call a route with this access
    /// (for `OwnMachine`, given that the machine is its own).
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::Public | Access::Authenticated => true,
            Access::AtLeast(least) => role.at_least(least),
            Access::OwnMachine => role == Role::Machine,
            Access::Join => role == Role::Join,
            Access::Metrics => role == Role::Metrics || role.is_person(),
        }
    }

    /// How docs/security.md names it.
    pub fn describe(self) -> String {
        match self {
            Access::Public => "anyone".into(),
            Access::Authenticated => "any credential".into(),
            Access::AtLeast(Role::Admin) => "admin".into(),
            Access::AtLeast(role) => format!("{role} and above"),
            Access::OwnMachine => "machine (its own)".into(),
            Access::Join => "join token".into(),
            Access::Metrics => "metrics, viewer and above".into(),
        }
    }
}

/// One route: a method on a path (with `{param}`s, as axum and OpenAPI
/// both write them), who may call it, and whether its calls are audited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: HttpMethod,
    pub path: &'static str,
    pub endpoint: Endpoint,
    pub access: Access,
    /// Every call is recorded in the audit log (all changes, but an
    /// agent's heartbeats and state reports, which change nothing a person
    /// asked for).
    pub audited: bool,
}

const VIEWER: Access = Access::AtLeast(Role::Viewer);
const OPERATOR: Access = Access::AtLeast(Role::Operator);
const ADMIN: Access = Access::AtLeast(Role::Admin);

const fn route(
    method: HttpMethod,
    path: &'static str,
    endpoint: Endpoint,
    access: Access,
) -> Route {
    Route {
        method,
        path,
        endpoint,
        access,
        audited: false,
    }
}

const fn audited(
    method: HttpMethod,
    path: &'static str,
    endpoint: Endpoint,
    access: Access,
) -> Route {
    Route {
        audited: true,
        ..route(method, path, endpoint, access)
    }
}

/// Every route the server answers.
pub const ROUTES: &[Route] = &[
    route(HttpMethod::Get, "/v1/units", Endpoint::ListUnits, VIEWER),
    route(
        HttpMethod::Get,
        "/v1/units/{name}",
        Endpoint::GetUnit,
        VIEWER,
    ),
    audited(
        HttpMethod::Put,
        "/v1/units/{name}",
        Endpoint::PutUnit,
        OPERATOR,
    ),
    audited(
        HttpMethod::Delete,
        "/v1/units/{name}",
        Endpoint::DeleteUnit,
        OPERATOR,
    ),
    route(
        HttpMethod::Get,
        "/v1/units/{name}/status",
        Endpoint::UnitStatus,
        VIEWER,
    ),
    // Logs can hold secrets: reading them is for operators and admins.
    route(
        HttpMethod::Get,
        "/v1/units/{name}/journal",
        Endpoint::UnitJournal,
        OPERATOR,
    ),
    // Rolling updates (see `super::rollouts`).
    audited(
        HttpMethod::Post,
        "/v1/rollouts",
        Endpoint::StartRollout,
        OPERATOR,
    ),
    route(
        HttpMethod::Get,
        "/v1/rollouts",
        Endpoint::ListRollouts,
        VIEWER,
    ),
    route(
        HttpMethod::Get,
        "/v1/rollouts/{name}",
        Endpoint::GetRollout,
        VIEWER,
    ),
    route(HttpMethod::Get, "/v1/state", Endpoint::ListStates, VIEWER),
    route(
        HttpMethod::Get,
        "/v1/machines",
        Endpoint::ListMachines,
        VIEWER,
    ),
    audited(
        HttpMethod::Patch,
        "/v1/machines/{id}",
        Endpoint::PatchMachine,
        ADMIN,
    ),
    audited(
        HttpMethod::Delete,
        "/v1/machines/{id}",
        Endpoint::RemoveMachine,
        ADMIN,
    ),
    route(
        HttpMethod::Get,
        "/v1/servers",
        Endpoint::ListServers,
        VIEWER,
    ),
    audited(HttpMethod::Post, "/v1/servers", Endpoint::AddServer, ADMIN),
    audited(
        HttpMethod::Delete,
        "/v1/servers/{id}",
        Endpoint::RemoveServer,
        ADMIN,
    ),
    route(HttpMethod::Get, "/v1/watch", Endpoint::Watch, VIEWER),
    // The cluster's history (see `super::events`).
    route(HttpMethod::Get, "/v1/events", Endpoint::Events, VIEWER),
    route(
        HttpMethod::Get,
        "/v1/whoami",
        Endpoint::WhoAmI,
        Access::Authenticated,
    ),
    route(HttpMethod::Get, "/v1/tokens", Endpoint::ListTokens, ADMIN),
    audited(HttpMethod::Post, "/v1/tokens", Endpoint::CreateToken, ADMIN),
    audited(
        HttpMethod::Delete,
        "/v1/tokens/{id}",
        Endpoint::RevokeToken,
        ADMIN,
    ),
    audited(HttpMethod::Post, "/v1/certs", Endpoint::CreateCert, ADMIN),
    route(HttpMethod::Get, "/v1/audit", Endpoint::Audit, ADMIN),
    // Secrets: names, sizes and versions are no more than unit files
    // show; values are never read back (see `super::secrets`).
    route(
        HttpMethod::Get,
        "/v1/secrets",
        Endpoint::ListSecrets,
        VIEWER,
    ),
    audited(
        HttpMethod::Put,
        "/v1/secrets/{name}",
        Endpoint::PutSecret,
        OPERATOR,
    ),
    audited(
        HttpMethod::Delete,
        "/v1/secrets/{name}",
        Endpoint::DeleteSecret,
        OPERATOR,
    ),
    // Git sources: following one changes units as its commits say, so
    // making, changing, pausing and removing one is for operators.
    route(
        HttpMethod::Get,
        "/v1/sync",
        Endpoint::ListSyncSources,
        VIEWER,
    ),
    route(
        HttpMethod::Get,
        "/v1/sync/{name}",
        Endpoint::GetSyncSource,
        VIEWER,
    ),
    audited(
        HttpMethod::Put,
        "/v1/sync/{name}",
        Endpoint::PutSyncSource,
        OPERATOR,
    ),
    audited(
        HttpMethod::Post,
        "/v1/sync/{name}/pause",
        Endpoint::PauseSyncSource,
        OPERATOR,
    ),
    audited(
        HttpMethod::Post,
        "/v1/sync/{name}/resume",
        Endpoint::ResumeSyncSource,
        OPERATOR,
    ),
    audited(
        HttpMethod::Delete,
        "/v1/sync/{name}",
        Endpoint::DeleteSyncSource,
        OPERATOR,
    ),
    audited(
        HttpMethod::Post,
        "/v1/agent/join",
        Endpoint::Join,
        Access::Join,
    ),
    audited(
        HttpMethod::Post,
        "/v1/agent/machines",
        Endpoint::RegisterMachine,
        Access::OwnMachine,
    ),
    route(
        HttpMethod::Post,
        "/v1/agent/machines/{id}/heartbeat",
        Endpoint::Heartbeat,
        Access::OwnMachine,
    ),
    route(
        HttpMethod::Get,
        "/v1/agent/machines/{id}/units",
        Endpoint::MachineUnits,
        Access::OwnMachine,
    ),
    route(
        HttpMethod::Get,
        "/v1/agent/machines/{id}/units/{unit}/secrets",
        Endpoint::UnitSecrets,
        Access::OwnMachine,
    ),
    route(
        HttpMethod::Put,
        "/v1/agent/machines/{id}/state",
        Endpoint::ReportStates,
        Access::OwnMachine,
    ),
    route(
        HttpMethod::Get,
        "/v1/agent/machines/{id}/requests",
        Endpoint::AgentRequests,
        Access::OwnMachine,
    ),
    route(
        HttpMethod::Post,
        "/v1/agent/machines/{id}/replies/{request}",
        Endpoint::AgentReply,
        Access::OwnMachine,
    ),
    route(HttpMethod::Get, "/v1/ca", Endpoint::Ca, Access::Public),
    route(
        HttpMethod::Get,
        "/v1/openapi.json",
        Endpoint::OpenApi,
        Access::Public,
    ),
    route(
        HttpMethod::Get,
        "/healthz",
        Endpoint::Health,
        Access::Public,
    ),
    // The web console's sign-in and sign-out (see `super::ui`): the
    // sign-in checks the token it is given.
    route(
        HttpMethod::Post,
        "/v1/session",
        Endpoint::SignIn,
        Access::Public,
    ),
    route(
        HttpMethod::Delete,
        "/v1/session",
        Endpoint::SignOut,
        Access::Public,
    ),
    // Prometheus' scrapes (docs/metrics.md).
    route(
        HttpMethod::Get,
        "/metrics",
        Endpoint::Metrics,
        Access::Metrics,
    ),
    // fleet's v1 API, for fleet's clients (see `super::fleet`).
    route(
        HttpMethod::Get,
        "/fleet/v1/discovery",
        Endpoint::FleetDiscovery,
        Access::Public,
    ),
    route(
        HttpMethod::Get,
        "/fleet/v1/units",
        Endpoint::FleetListUnits,
        VIEWER,
    ),
    route(
        HttpMethod::Get,
        "/fleet/v1/units/{name}",
        Endpoint::FleetGetUnit,
        VIEWER,
    ),
    audited(
        HttpMethod::Put,
        "/fleet/v1/units/{name}",
        Endpoint::FleetPutUnit,
        OPERATOR,
    ),
    audited(
        HttpMethod::Delete,
        "/fleet/v1/units/{name}",
        Endpoint::FleetDeleteUnit,
        OPERATOR,
    ),
    route(
        HttpMethod::Get,
        "/fleet/v1/state",
        Endpoint::FleetListStates,
        VIEWER,
    ),
    route(
        HttpMethod::Get,
        "/fleet/v1/state/{name}",
        Endpoint::FleetGetState,
        VIEWER,
    ),
    route(
        HttpMethod::Get,
        "/fleet/v1/machines",
        Endpoint::FleetListMachines,
        VIEWER,
    ),
    audited(
        HttpMethod::Patch,
        "/fleet/v1/machines",
        Endpoint::FleetPatchMachines,
        ADMIN,
    ),
];

/// The handler of `route`, on its method only.
pub(super) fn method_router<C: ControlPlane>(route: &Route) -> MethodRouter<AppState<C>> {
    let method = route.method.filter();
    match route.endpoint {
        Endpoint::ListUnits => on(method, units::list::<C>),
        Endpoint::GetUnit => on(method, units::get::<C>),
        Endpoint::PutUnit => on(method, units::put::<C>),
        Endpoint::DeleteUnit => on(method, units::delete::<C>),
        Endpoint::ListStates => on(method, state::list::<C>),
        Endpoint::ListMachines => on(method, machines::list::<C>),
        Endpoint::PatchMachine => on(method, machines::patch::<C>),
        Endpoint::ListServers => on(method, servers::list::<C>),
        Endpoint::AddServer => on(method, servers::add::<C>),
        Endpoint::RemoveServer => on(method, servers::remove::<C>),
        Endpoint::Watch => on(method, watch::watch::<C>),
        Endpoint::RegisterMachine => on(method, agent::register::<C>),
        Endpoint::Heartbeat => on(method, agent::heartbeat::<C>),
        Endpoint::MachineUnits => on(method, agent::units::<C>),
        Endpoint::ReportStates => on(method, agent::report_states::<C>),
        Endpoint::Join => on(method, trust::join::<C>),
        Endpoint::RemoveMachine => on(method, trust::remove_machine::<C>),
        Endpoint::WhoAmI => on(method, trust::whoami),
        Endpoint::ListTokens => on(method, trust::list_tokens::<C>),
        Endpoint::CreateToken => on(method, trust::create_token::<C>),
        Endpoint::RevokeToken => on(method, trust::revoke_token::<C>),
        Endpoint::CreateCert => on(method, trust::create_cert::<C>),
        Endpoint::Audit => on(method, trust::audit::<C>),
        Endpoint::Ca => on(method, trust::ca::<C>),
        Endpoint::OpenApi => on(method, meta::openapi),
        Endpoint::Health => on(method, meta::health),
        Endpoint::UnitStatus => on(method, inspect::status::<C>),
        Endpoint::UnitJournal => on(method, inspect::journal::<C>),
        Endpoint::AgentRequests => on(method, inspect::requests::<C>),
        Endpoint::AgentReply => on(method, inspect::reply::<C>),
        Endpoint::ListSecrets => on(method, secrets::list::<C>),
        Endpoint::PutSecret => on(method, secrets::put::<C>),
        Endpoint::DeleteSecret => on(method, secrets::delete::<C>),
        Endpoint::UnitSecrets => on(method, secrets::for_unit::<C>),
        Endpoint::ListSyncSources => on(method, sync::list::<C>),
        Endpoint::GetSyncSource => on(method, sync::get::<C>),
        Endpoint::PutSyncSource => on(method, sync::put::<C>),
        Endpoint::PauseSyncSource => on(method, sync::pause::<C>),
        Endpoint::ResumeSyncSource => on(method, sync::resume::<C>),
        Endpoint::DeleteSyncSource => on(method, sync::delete::<C>),
        Endpoint::FleetDiscovery => on(method, fleet::discovery),
        Endpoint::FleetListUnits => on(method, fleet::list_units::<C>),
        Endpoint::FleetGetUnit => on(method, fleet::get_unit::<C>),
        Endpoint::FleetPutUnit => on(method, fleet::put_unit::<C>),
        Endpoint::FleetDeleteUnit => on(method, fleet::delete_unit::<C>),
        Endpoint::FleetListStates => on(method, fleet::list_states::<C>),
        Endpoint::FleetGetState => on(method, fleet::get_state::<C>),
        Endpoint::FleetListMachines => on(method, fleet::list_machines::<C>),
        Endpoint::FleetPatchMachines => on(method, fleet::patch_machines::<C>),
        Endpoint::StartRollout => on(method, rollouts::start::<C>),
        Endpoint::ListRollouts => on(method, rollouts::list::<C>),
        Endpoint::GetRollout => on(method, rollouts::get::<C>),
        Endpoint::Events => on(method, events::list::<C>),
        Endpoint::Metrics => on(method, metrics::metrics::<C>),
        Endpoint::SignIn => on(method, ui::sign_in::<C>),
        Endpoint::SignOut => on(method, ui::sign_out::<C>),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn each_route_once() {
        let mut seen = HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{r:?} listed twice");
        }
        let endpoints: HashSet<_> = ROUTES.iter().map(|r| r.endpoint).collect();
        assert_eq!(endpoints.len(), ROUTES.len(), "an endpoint on two routes");
    }
}
