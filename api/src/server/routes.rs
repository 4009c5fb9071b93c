//! The one table of routes: the router is built from it, and the OpenAPI
//! test checks the document against it and against the live router.

use axum::routing::{MethodFilter, MethodRouter, on};
use flotilla_scheduler::control::ControlPlane;

use super::{AppState, agent, machines, meta, servers, state, units, watch};

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
    Watch,
    RegisterMachine,
    Heartbeat,
    MachineUnits,
    ReportStates,
    OpenApi,
    Health,
}

/// One route: a method on a path (with `{param}`s, as axum and OpenAPI
/// both write them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: HttpMethod,
    pub path: &'static str,
    pub endpoint: Endpoint,
}

const fn route(method: HttpMethod, path: &'static str, endpoint: Endpoint) -> Route {
    Route {
        method,
        path,
        endpoint,
    }
}

/// Every route the server answers.
pub const ROUTES: &[Route] = &[
    route(HttpMethod::Get, "/v1/units", Endpoint::ListUnits),
    route(HttpMethod::Get, "/v1/units/{name}", Endpoint::GetUnit),
    route(HttpMethod::Put, "/v1/units/{name}", Endpoint::PutUnit),
    route(HttpMethod::Delete, "/v1/units/{name}", Endpoint::DeleteUnit),
    route(HttpMethod::Get, "/v1/state", Endpoint::ListStates),
    route(HttpMethod::Get, "/v1/machines", Endpoint::ListMachines),
    route(
        HttpMethod::Patch,
        "/v1/machines/{id}",
        Endpoint::PatchMachine,
    ),
    route(HttpMethod::Get, "/v1/servers", Endpoint::ListServers),
    route(HttpMethod::Get, "/v1/watch", Endpoint::Watch),
    route(
        HttpMethod::Post,
        "/v1/agent/machines",
        Endpoint::RegisterMachine,
    ),
    route(
        HttpMethod::Post,
        "/v1/agent/machines/{id}/heartbeat",
        Endpoint::Heartbeat,
    ),
    route(
        HttpMethod::Get,
        "/v1/agent/machines/{id}/units",
        Endpoint::MachineUnits,
    ),
    route(
        HttpMethod::Put,
        "/v1/agent/machines/{id}/state",
        Endpoint::ReportStates,
    ),
    route(HttpMethod::Get, "/v1/openapi.json", Endpoint::OpenApi),
    route(HttpMethod::Get, "/healthz", Endpoint::Health),
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
        Endpoint::Watch => on(method, watch::watch::<C>),
        Endpoint::RegisterMachine => on(method, agent::register::<C>),
        Endpoint::Heartbeat => on(method, agent::heartbeat::<C>),
        Endpoint::MachineUnits => on(method, agent::units::<C>),
        Endpoint::ReportStates => on(method, agent::report_states::<C>),
        Endpoint::OpenApi => on(method, meta::openapi),
        Endpoint::Health => on(method, meta::health),
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
