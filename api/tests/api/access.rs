//! Who may call what: every route of `ROUTES` with every kind of
//! credential, over real HTTPS; machines acting only as themselves; tokens
//! expired, revoked and used up; client certificates; the audit log; and
//! docs/security.md's table kept in step with `ROUTES`.

use std::time::Duration;

use flotilla_api::client::{ClientError, ClientOptions};
use flotilla_api::server::{Access, ROUTES, Route};
use flotilla_api::tls::{ClientIdentity, ServerTrust, make_signing_request};
use flotilla_proto::trust::{CertCreate, Role, TokenCreate};
use flotilla_proto::wire::StateReport;

use crate::{Server, machine, machine_id, state};

/// The route's path with its parameters filled: units `web.service`,
/// machines number 1 (the agent routes) or 7 (an unknown one, so that an
/// allowed removal changes nothing), credentials an unknown id.
fn concrete(route: &Route) -> String {
    let machine = if route.path.starts_with("/v1/agent/") {
        machine_id(1)
    } else {
        machine_id(7)
    };
    let mut path = route.path.replace("{name}", "web.service").replace(
        "{id}",
        if route.path.starts_with("/v1/tokens/") {
            "0123456789abcdef"
        } else {
            machine.as_str()
        },
    );
    // Long polls answer at once.
    if path.ends_with("/watch") {
        path.push_str("?index=1&wait=0");
    }
    if path.ends_with("/units") && path.starts_with("/v1/agent/") {
        path.push_str("?index=1&wait=0");
    }
    if path.ends_with("/requests") {
        path.push_str("?wait=0");
    }
    path
}

fn is_refusal(status: u16) -> bool {
    status == 401 || status == 403
}

#[tokio::test]
async fn every_route_with_every_credential() {
    let server = Server::start().await;
    let credentials: Vec<(&str, Option<Role>, Option<String>)> = vec![
        ("nothing", None, None),
        (
            "viewer",
            Some(Role::Viewer),
            Some(server.token(Role::Viewer).await),
        ),
        (
            "operator",
            Some(Role::Operator),
            Some(server.token(Role::Operator).await),
        ),
        ("admin", Some(Role::Admin), Some(server.admin.clone())),
        (
            "join",
            Some(Role::Join),
            Some(server.token(Role::Join).await),
        ),
        (
            "machine",
            Some(Role::Machine),
            Some(server.machine_token(1).await),
        ),
        (
            "metrics",
            Some(Role::Metrics),
            Some(server.token(Role::Metrics).await),
        ),
    ];
    let mut table = Vec::new();
    for route in ROUTES {
        let url = format!("{}{}", server.url, concrete(route));
        for (who, role, token) in &credentials {
            // An empty object: an allowed caller gets past the guard and is
            // refused by the handler (400) or answered, never 401/403.
            let (status, _, body) = server
                .raw_as(
                    token.as_deref(),
                    route.method.as_str(),
                    &url,
                    Some("application/json"),
                    "{}",
                )
                .await;
            let allowed = match (route.access, role) {
                (Access::Public, _) => true,
                (_, None) => false,
                (access, Some(role)) => access.allows(*role),
            };
            let expected = match (allowed, role) {
                (true, _) => "allowed",
                (false, None) => "401",
                (false, Some(_)) => "403",
            };
            let got = match status {
                401 => "401",
                403 => "403",
                _ => "allowed",
            };
            if got != expected {
                table.push(format!(
                    "{} {} as {who}: expected {expected}, got {status} {}",
                    route.method.as_str(),
                    route.path,
                    String::from_utf8_lossy(&body)
                ));
            }
            if is_refusal(status) {
                let reason = if status == 401 {
                    "unauthorized"
                } else {
                    "forbidden"
                };
                assert!(
                    String::from_utf8_lossy(&body).contains(reason),
                    "{} {}: {status} without its reason",
                    route.method.as_str(),
                    route.path
                );
            }
        }
    }
    assert!(table.is_empty(), "{}", table.join("\n"));
}

#[tokio::test]
async fn a_machine_acts_only_as_itself() {
    let server = Server::start().await;
    // A unit whose state machine 1 might try to report as machine 2's.
    server
        .client()
        .put_unit(
            &crate::name("web.service"),
            &flotilla_proto::wire::UnitPut {
                desired_state: Some(flotilla_proto::DesiredState::Inactive),
                text: Some(crate::SERVICE.into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let one = server.agent(1).await;
    let two = server.agent(2).await;
    let lease_two = two.register_machine(&machine(2)).await.unwrap().lease;
    let lease_one = one.register_machine(&machine(1)).await.unwrap().lease;

    // Registering, heartbeating, reading and reporting as machine 2: 403.
    let forbidden = |e: ClientError| assert_eq!(e.status(), Some(403), "{e}");
    forbidden(one.register_machine(&machine(2)).await.unwrap_err());
    forbidden(one.heartbeat(&machine_id(2), lease_two).await.unwrap_err());
    forbidden(
        one.machine_units(&machine_id(2), None, Duration::ZERO)
            .await
            .unwrap_err(),
    );
    let report = StateReport {
        states: vec![state("web.service", 2)],
        removed: vec![],
    };
    forbidden(
        one.report_states(&machine_id(2), &report)
            .await
            .unwrap_err(),
    );
    // Nothing changed for machine 2: its registration is its own, on its
    // lease, and no state was stored.
    let registered = server.client().all_machines().await.unwrap();
    let registered: Vec<_> = registered
        .into_iter()
        .map(|m| m.machine)
        .filter(|m| m.id == machine_id(2))
        .collect();
    assert_eq!(registered, vec![machine(2)]);
    two.heartbeat(&machine_id(2), lease_two).await.unwrap();
    let states = server
        .client()
        .all_states(&flotilla_api::client::StateQuery {
            unit: None,
            machine: Some(machine_id(2)),
        })
        .await
        .unwrap();
    assert!(states.is_empty(), "{states:?}");
    // A guessed lease of its own machine is no lease.
    let e = one
        .heartbeat(&machine_id(1), lease_one + 1)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    // No user route either.
    forbidden(one.all_units().await.unwrap_err());
    forbidden(one.list_credentials().await.unwrap_err());

    // A machine that joined cannot join again (its id is held), with any
    // join token.
    let join = server.token(Role::Join).await;
    let e = server
        .client_with(Some(&join))
        .join(&machine_id(1))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("has joined already"), "{e}");

    // Until it is removed: then its credential is refused at once, and it
    // may join again.
    server
        .client()
        .remove_machine(&machine_id(1))
        .await
        .unwrap();
    let e = one.heartbeat(&machine_id(1), lease_one).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    server
        .client_with(Some(&join))
        .join(&machine_id(1))
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_revoked_and_used_up_tokens_are_refused_at_once() {
    let server = Server::start().await;
    let admin = server.client();

    let created = admin
        .create_token(&TokenCreate {
            role: Role::Viewer,
            name: "ci".into(),
            ttl_ms: None,
            uses: None,
        })
        .await
        .unwrap();
    assert!(created.token.starts_with("flt1."));
    assert_eq!(created.join, None);
    let viewer = server.client_with(Some(&created.token));
    assert_eq!(viewer.whoami().await.unwrap().name, "ci");
    admin
        .revoke_credential(&created.credential.id)
        .await
        .unwrap();
    let e = viewer.whoami().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(e.to_string().contains("revoked"), "{e}");

    let short = admin
        .create_token(&TokenCreate {
            role: Role::Viewer,
            name: "short".into(),
            ttl_ms: Some(50),
            uses: None,
        })
        .await
        .unwrap();
    let client = server.client_with(Some(&short.token));
    crate::within(async {
        loop {
            match client.whoami().await {
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(e) => {
                    assert_eq!(e.status(), Some(401), "{e}");
                    assert!(e.to_string().contains("expired"), "{e}");
                    break;
                }
            }
        }
    })
    .await;

    let once = admin
        .create_token(&TokenCreate {
            role: Role::Join,
            name: "one machine".into(),
            ttl_ms: None,
            uses: Some(1),
        })
        .await
        .unwrap();
    let join = once.join.expect("a join token comes with its join string");
    assert!(join.starts_with(&once.token));
    assert!(join.ends_with(server.trust.ca.fingerprint()));
    let joiner = server.client_with(Some(&once.token));
    joiner.join(&machine_id(1)).await.unwrap();
    let e = joiner.join(&machine_id(2)).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    assert!(e.to_string().contains("no uses left"), "{e}");

    // Machine credentials cannot be made by hand, nor uses given to others.
    for bad in [
        TokenCreate {
            role: Role::Machine,
            name: "m".into(),
            ttl_ms: None,
            uses: None,
        },
        TokenCreate {
            role: Role::Viewer,
            name: "v".into(),
            ttl_ms: None,
            uses: Some(3),
        },
        TokenCreate {
            role: Role::Viewer,
            name: " ".into(),
            ttl_ms: None,
            uses: None,
        },
    ] {
        let e = admin.create_token(&bad).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{e}");
    }
}

#[tokio::test]
async fn client_certificates_authenticate_with_their_role() {
    let server = Server::start().await;
    let (key_pem, csr_pem) = make_signing_request("alice").unwrap();
    let issued = server
        .client()
        .create_certificate(&CertCreate {
            role: Role::Operator,
            name: "alice".into(),
            csr_pem,
            ttl_ms: None,
        })
        .await
        .unwrap();
    assert_eq!(issued.ca_pem.as_bytes(), server.ca_pem.as_slice());
    let alice = flotilla_api::client::Client::with_options(
        [&server.url],
        ClientOptions {
            token: None,
            trust: ServerTrust::CaPem(server.ca_pem.clone()),
            identity: Some(ClientIdentity {
                cert_pem: issued.certificate_pem.into_bytes(),
                key_pem: key_pem.into_bytes(),
            }),
        },
    )
    .unwrap();
    let me = alice.whoami().await.unwrap();
    assert_eq!((me.name.as_str(), me.role), ("alice", Role::Operator));
    assert!(alice.all_units().await.unwrap().is_empty());
    let e = alice.list_credentials().await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");

    // A certificate's request signed by the wrong key is refused, and
    // leaves no credential behind.
    let before = server.client().list_credentials().await.unwrap().len();
    let e = server
        .client()
        .create_certificate(&CertCreate {
            role: Role::Viewer,
            name: "mallory".into(),
            csr_pem:
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
                    .into(),
            ttl_ms: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert_eq!(
        server.client().list_credentials().await.unwrap().len(),
        before
    );

    // Revoked: refused at once.
    server.client().revoke_credential(&me.id).await.unwrap();
    let e = alice.whoami().await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
}

#[tokio::test]
async fn changes_and_refusals_are_audited() {
    let server = Server::start().await;
    let operator = server.token(Role::Operator).await;
    let viewer = server.token(Role::Viewer).await;
    let put = flotilla_proto::wire::UnitPut {
        desired_state: Some(flotilla_proto::DesiredState::Launched),
        text: Some(crate::SERVICE.into()),
        ..Default::default()
    };
    server
        .client_with(Some(&operator))
        .put_unit(&crate::name("web.service"), &put)
        .await
        .unwrap();
    let e = server
        .client_with(Some(&viewer))
        .delete_unit(&crate::name("web.service"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    // Reads are not audited.
    server.client().all_units().await.unwrap();

    let entries = server
        .client()
        .audit(None, &Default::default())
        .await
        .unwrap()
        .entries;
    let seen: Vec<(String, Role, String, u16)> = entries
        .iter()
        .map(|e| (e.actor_name.clone(), e.role, e.action.clone(), e.status))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                "test operator".into(),
                Role::Operator,
                "PUT /v1/units/web.service".into(),
                201
            ),
            (
                "test viewer".into(),
                Role::Viewer,
                "DELETE /v1/units/web.service".into(),
                403
            ),
        ]
    );
    assert!(entries.iter().all(|e| e.peer.starts_with("127.0.0.1:")));
    // Only admins read it.
    let e = server
        .client_with(Some(&operator))
        .audit(None, &Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    // Since a moment after the last entry: nothing.
    let later = entries.last().unwrap().at_ms + 1;
    let none = server
        .client()
        .audit(Some(later + 60_000), &Default::default())
        .await
        .unwrap();
    assert!(none.entries.is_empty());
}

#[tokio::test]
async fn anonymous_callers_learn_nothing_but_public_routes() {
    let server = Server::start().await;
    let anonymous = server.client_with(None);
    anonymous.health().await.unwrap();
    assert!(anonymous.openapi().await.unwrap().is_object());
    assert_eq!(
        anonymous.ca().await.unwrap().as_bytes(),
        server.ca_pem.as_slice()
    );
    let (status, headers, _) = server
        .raw_as(None, "GET", &format!("{}/v1/nothing", server.url), None, "")
        .await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    let (status, _, _) = server
        .raw_as(None, "POST", &format!("{}/v1/units", server.url), None, "")
        .await;
    assert_eq!(status, 401);
    // With a credential, the same requests are told what is wrong.
    let (status, _, _) = server
        .raw("GET", &format!("{}/v1/nothing", server.url), None, "")
        .await;
    assert_eq!(status, 404);
    // A scheme other than Bearer, and a token that is no token.
    for header in ["Basic YWRtaW46YWRtaW4=", "Bearer hunter2", "Bearer"] {
        let response = reqwest_with_ca(&server)
            .get(format!("{}/v1/units", server.url))
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 401, "{header}");
    }
}

fn reqwest_with_ca(server: &Server) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&server.ca_pem).unwrap()])
        .build()
        .unwrap()
}

/// docs/security.md holds the table of who may call each route: it is
/// this table, row for row.
#[test]
fn the_documented_table_is_the_routes() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/security.md"),
    )
    .unwrap();
    let start = doc
        .find("<!-- routes -->")
        .expect("docs/security.md marks its route table with <!-- routes -->");
    let end = doc.find("<!-- /routes -->").unwrap();
    let documented: Vec<String> = doc[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = ROUTES
        .iter()
        .map(|r| {
            format!(
                "| `{} {}` | {} | {} |",
                r.method.as_str(),
                r.path,
                r.access.describe(),
                if r.audited { "yes" } else { "no" }
            )
        })
        .collect();
    assert_eq!(
        documented,
        expected,
        "docs/security.md's route table differs from ROUTES; it should read:\n{}",
        expected.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_joining_together_share_one_token_and_its_uses() {
    let server = Server::start().await;
    // An unlimited token: every machine of a rack booting at once joins.
    let token = server.token(Role::Join).await;
    let joins: Vec<_> = (1..=40)
        .map(|n| {
            let client = server.client_with(Some(&token));
            tokio::spawn(async move { client.join(&machine_id(n)).await })
        })
        .collect();
    for join in joins {
        join.await.unwrap().unwrap();
    }
    // A token of five uses: five of ten machines get in, the others are
    // told it is used up.
    let five = server
        .client()
        .create_token(&TokenCreate {
            role: Role::Join,
            name: "five".into(),
            ttl_ms: None,
            uses: Some(5),
        })
        .await
        .unwrap();
    let joins: Vec<_> = (41..=50)
        .map(|n| {
            let client = server.client_with(Some(&five.token));
            tokio::spawn(async move { client.join(&machine_id(n)).await })
        })
        .collect();
    let mut joined = 0;
    for join in joins {
        match join.await.unwrap() {
            Ok(_) => joined += 1,
            Err(e) => assert!(matches!(e.status(), Some(401 | 403)), "{e}"),
        }
    }
    assert_eq!(joined, 5);
}
