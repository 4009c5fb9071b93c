//! `/v1/secrets` and the agents' secrets route over real HTTPS: who may
//! make, list and remove secrets, the limits, values never read back
//! (not by the secrets routes, not in unit reads), and values delivered
//! only to the machine a unit is placed on.

use flotilla_proto::DesiredState;
use flotilla_proto::secret::{MAX_SECRET_BYTES, encode_value};
use flotilla_proto::trust::Role;
use flotilla_proto::wire::UnitPut;

use crate::{DEADLINE, Server, eventually, machine, machine_id, name};

const VALUE: &[u8] = b"correct horse battery staple";

const UNIT: &str = "[Container]\nImage=busybox\nSecret=db\n";

#[tokio::test]
async fn roles_and_never_a_value() {
    let server = Server::start().await;
    let operator = server.client_as(Role::Operator).await;
    let viewer = server.client_as(Role::Viewer).await;
    let made = operator.put_secret("db", VALUE, false).await.unwrap();
    assert_eq!((made.name.as_str(), made.size, made.version), ("db", 28, 1));

    // Viewers list (names, sizes, versions); they may not change.
    let listed = viewer.list_secrets().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version, 1);
    let e = viewer.put_secret("x", b"v", false).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    let e = viewer.delete_secret("db").await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    // A machine may not list or make them.
    let agent = server.agent(1).await;
    let e = agent.list_secrets().await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");

    // No read shows the value: the listing, the answer to a change, any
    // unit read.
    let unit = name("app.service");
    operator
        .put_unit(
            &unit,
            &UnitPut {
                desired_state: Some(DesiredState::Launched),
                text: Some(UNIT.into()),
                ..UnitPut::default()
            },
        )
        .await
        .unwrap();
    let encoded = encode_value(VALUE);
    for url in ["/v1/secrets", "/v1/units", "/v1/units/app.service"] {
        let (status, _, body) = server
            .raw("GET", &format!("{}{url}", server.url), None, "")
            .await;
        assert_eq!(status, 200, "{url}");
        let body = String::from_utf8(body).unwrap();
        assert!(!body.contains("correct horse"), "{url}: {body}");
        assert!(!body.contains(&encoded), "{url}: {body}");
    }
    let replaced = operator.put_secret("db", b"new", true).await.unwrap();
    assert_eq!(replaced.version, 2);
    // Not removed while a unit names it.
    let e = operator.delete_secret("db").await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("used by app.service"), "{e}");
    assert_eq!(viewer.list_secrets().await.unwrap().len(), 1);
    operator.delete_unit(&unit).await.unwrap();
    let removed = operator.delete_secret("db").await.unwrap();
    assert_eq!(removed.version, 2);
    assert!(viewer.list_secrets().await.unwrap().is_empty());
    let e = operator.delete_secret("db").await.unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
}

#[tokio::test]
async fn limits_and_bad_requests() {
    let server = Server::start().await;
    let admin = server.client();
    let too_big = vec![b'x'; MAX_SECRET_BYTES + 1];
    let e = admin.put_secret("big", &too_big, false).await.unwrap_err();
    assert_eq!(e.status(), Some(413), "{e}");
    assert!(
        e.to_string().contains("over the limit of 65536 bytes"),
        "{e}"
    );
    let fits = vec![b'x'; MAX_SECRET_BYTES];
    admin.put_secret("big", &fits, false).await.unwrap();

    let e = admin.put_secret("big", b"v", false).await.unwrap_err();
    assert_eq!(e.status(), Some(409), "{e}");
    assert!(e.to_string().contains("exists already"), "{e}");

    let e = admin.put_secret(".hidden", b"v", false).await.unwrap_err();
    assert_eq!(e.status(), Some(400), "{e}");
    assert!(e.to_string().contains("not a secret name"), "{e}");

    let body = server
        .raw_error(
            "PUT",
            &format!("{}/v1/secrets/x", server.url),
            Some("application/json"),
            r#"{"value":"not base64!"}"#,
        )
        .await;
    assert_eq!(
        (body.error.code, body.error.reason.as_str()),
        (400, "invalid_request")
    );
    assert!(
        body.error.message.contains("base64"),
        "{}",
        body.error.message
    );
    // Nothing half-made.
    let names: Vec<String> = admin
        .list_secrets()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["big"]);
}

#[tokio::test]
async fn values_go_only_to_the_machine_of_the_unit() {
    let server = Server::start().await;
    let admin = server.client();
    admin.put_secret("db", VALUE, false).await.unwrap();
    let unit = name("app.service");
    // Pinned to machine 1: the leader places it there.
    admin
        .put_unit(
            &unit,
            &UnitPut {
                desired_state: Some(DesiredState::Launched),
                text: Some(format!("{UNIT}[X-Fleet]\nMachineID={}\n", machine_id(1))),
                ..UnitPut::default()
            },
        )
        .await
        .unwrap();
    let one = server.agent(1).await;
    let two = server.agent(2).await;
    one.register_machine(&machine(1)).await.unwrap();
    two.register_machine(&machine(2)).await.unwrap();
    eventually("the unit placed on machine 1", DEADLINE, || async {
        let placed = admin.get_unit(&unit).await.unwrap().machine_id;
        (placed == Some(machine_id(1))).then_some(())
    })
    .await;

    let got = one
        .unit_secrets(&machine_id(1), "app.service")
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].name.as_str(), got[0].version), ("db", 1));
    assert_eq!(got[0].value, VALUE);
    assert!(!format!("{got:?}").contains("correct horse"));

    // Machine 2 does not run it: refused, for its own id and for 1's.
    let e = two
        .unit_secrets(&machine_id(2), "app.service")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.to_string().contains("not placed on machine"), "{e}");
    let e = two
        .unit_secrets(&machine_id(1), "app.service")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    // People do not read values, whatever their role.
    let e = admin
        .unit_secrets(&machine_id(1), "app.service")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");

    // A secret a unit names and nobody made (a secret in use cannot be
    // removed): the agent is told which.
    let other = name("cache.service");
    admin
        .put_unit(
            &other,
            &UnitPut {
                desired_state: Some(DesiredState::Launched),
                text: Some(format!(
                    "[Container]\nImage=busybox\nSecret=cache\n[X-Fleet]\nMachineID={}\n",
                    machine_id(1)
                )),
                ..UnitPut::default()
            },
        )
        .await
        .unwrap();
    eventually("the second unit placed on machine 1", DEADLINE, || async {
        let placed = admin.get_unit(&other).await.unwrap().machine_id;
        (placed == Some(machine_id(1))).then_some(())
    })
    .await;
    let e = one
        .unit_secrets(&machine_id(1), "cache.service")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
    assert!(e.to_string().contains("secret cache does not exist"), "{e}");
}

#[tokio::test]
async fn the_cluster_holds_a_bounded_number_of_secrets() {
    let server = Server::start().await;
    let admin = server.client();
    for n in 0..flotilla_proto::secret::MAX_SECRETS {
        admin
            .put_secret(&format!("s{n}"), b"v", false)
            .await
            .unwrap();
    }
    let e = admin.put_secret("one-more", b"v", false).await.unwrap_err();
    assert_eq!(e.status(), Some(507), "{e}");
    assert!(e.to_string().contains("1000 secrets, its limit"), "{e}");
    // Replacing one is still allowed; removing one makes room.
    admin.put_secret("s0", b"w", true).await.unwrap();
    admin.delete_secret("s1").await.unwrap();
    admin.put_secret("one-more", b"v", false).await.unwrap();
}
