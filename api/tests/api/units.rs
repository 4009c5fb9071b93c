//! `/v1/units`: 201/204/400/404/409, instances, pagination.

use flotilla_api::client::{ClientError, PageQuery, PutOutcome};
use flotilla_proto::DesiredState;
use flotilla_proto::wire::{UnitOption, UnitPut};

use crate::{SERVICE, Server, name};

fn put(desired: Option<DesiredState>, text: Option<&str>) -> UnitPut {
    UnitPut {
        desired_state: desired,
        text: text.map(str::to_owned),
        ..UnitPut::default()
    }
}

fn api_error(e: ClientError) -> (u16, String, String) {
    match e {
        ClientError::Api {
            status,
            reason,
            message,
        } => (status, reason, message),
        other => panic!("not an api error: {other}"),
    }
}

#[tokio::test]
async fn create_read_update_delete() {
    let server = Server::start().await;
    let client = server.client();
    let web = name("web.service");

    let outcome = client
        .put_unit(&web, &put(Some(DesiredState::Launched), Some(SERVICE)))
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::Created);

    let unit = client.get_unit(&web).await.unwrap();
    assert_eq!(unit.name, "web.service");
    assert_eq!(unit.text, SERVICE);
    assert_eq!(unit.desired_state, DesiredState::Launched);
    assert_eq!(unit.options.len(), 2);

    // The same contents again, another desired state: 204.
    let outcome = client
        .put_unit(&web, &put(Some(DesiredState::Loaded), Some(SERVICE)))
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::Updated);
    // Only the desired state: 204.
    let outcome = client
        .put_unit(&web, &put(Some(DesiredState::Inactive), None))
        .await
        .unwrap();
    assert_eq!(outcome, PutOutcome::Updated);
    let unit = client.get_unit(&web).await.unwrap();
    assert_eq!(unit.desired_state, DesiredState::Inactive);

    // A name without a suffix means a service, in the path too.
    let (status, _, body) = server
        .raw("GET", &format!("{}/v1/units/web", server.url), None, "")
        .await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("\"name\":\"web.service\""));

    client.delete_unit(&web).await.unwrap();
    let (status, reason, message) = api_error(client.get_unit(&web).await.unwrap_err());
    assert_eq!((status, reason.as_str()), (404, "not_found"));
    assert_eq!(message, "unit web.service does not exist");
    let e = client.delete_unit(&web).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
}

#[tokio::test]
async fn other_contents_conflict_unless_replaced() {
    let server = Server::start().await;
    let client = server.client();
    let web = name("web.service");
    let other = SERVICE.replace("infinity", "60");
    client
        .put_unit(&web, &put(Some(DesiredState::Loaded), Some(SERVICE)))
        .await
        .unwrap();

    let (status, reason, message) = api_error(
        client
            .put_unit(&web, &put(None, Some(&other)))
            .await
            .unwrap_err(),
    );
    assert_eq!((status, reason.as_str()), (409, "conflict"));
    assert!(message.contains("replace"), "{message}");
    assert_eq!(client.get_unit(&web).await.unwrap().text, SERVICE);

    let replace = UnitPut {
        replace: true,
        ..put(None, Some(&other))
    };
    assert_eq!(
        client.put_unit(&web, &replace).await.unwrap(),
        PutOutcome::Updated
    );
    assert_eq!(client.get_unit(&web).await.unwrap().text, other);
}

#[tokio::test]
async fn a_bad_unit_file_names_file_and_line() {
    let server = Server::start().await;
    let client = server.client();
    let bad = "[Unit]\nDescription=x\ngarbage line\n[X-Fleet]\nMachineID=node-1\n";
    let (status, reason, message) = api_error(
        client
            .put_unit(
                &name("bad.service"),
                &put(Some(DesiredState::Launched), Some(bad)),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((status, reason.as_str()), (400, "invalid_unit"));
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 2, "{message}");
    assert!(lines[0].starts_with("bad.service:3: error: "), "{message}");
    assert!(
        lines[1].starts_with("bad.service:5: error: [X-Fleet] MachineID: "),
        "{message}"
    );
    // Nothing was stored.
    assert!(client.all_units().await.unwrap().is_empty());
}

#[tokio::test]
async fn desired_state_of_a_missing_unit_is_not_found() {
    let server = Server::start().await;
    let e = server
        .client()
        .put_unit(
            &name("nope.service"),
            &put(Some(DesiredState::Launched), None),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(404), "{e}");
}

#[tokio::test]
async fn instances_come_from_their_template() {
    let server = Server::start().await;
    let client = server.client();
    let template = name("web@.service");
    let text = "[Service]\nExecStart=/bin/echo %i\n";
    client
        .put_unit(&template, &put(Some(DesiredState::Inactive), Some(text)))
        .await
        .unwrap();
    let instance = name("web@1.service");
    assert_eq!(
        client
            .put_unit(&instance, &put(Some(DesiredState::Launched), None))
            .await
            .unwrap(),
        PutOutcome::Created
    );
    let unit = client.get_unit(&instance).await.unwrap();
    assert_eq!(unit.desired_state, DesiredState::Launched);
    assert!(unit.text.contains("ExecStart=/bin/echo %i"));
}

#[tokio::test]
async fn contents_as_options() {
    let server = Server::start().await;
    let client = server.client();
    let option = |section: &str, name: &str, value: &str| UnitOption {
        section: section.into(),
        name: name.into(),
        value: value.into(),
    };
    let options = vec![
        option("Unit", "Description", "web"),
        option("Service", "ExecStart", "/bin/sleep infinity"),
    ];
    let request = UnitPut {
        desired_state: Some(DesiredState::Launched),
        options: Some(options.clone()),
        ..UnitPut::default()
    };
    client.put_unit(&name("web"), &request).await.unwrap();
    assert_eq!(
        client.get_unit(&name("web")).await.unwrap().options,
        options
    );

    // Both forms at once is refused before the control plane.
    let both = UnitPut {
        text: Some(SERVICE.into()),
        ..request
    };
    let (status, reason, _) = api_error(client.put_unit(&name("web2"), &both).await.unwrap_err());
    assert_eq!((status, reason.as_str()), (400, "invalid_request"));
}

#[tokio::test]
async fn pages_walk_every_unit_once() {
    let server = Server::start().await;
    let client = server.client();
    let mut names: Vec<String> = (0..7).map(|i| format!("u{i}.service")).collect();
    for n in &names {
        client
            .put_unit(&name(n), &put(Some(DesiredState::Inactive), Some(SERVICE)))
            .await
            .unwrap();
    }
    names.sort();

    let mut seen = Vec::new();
    let mut page = PageQuery {
        token: None,
        limit: Some(3),
    };
    let mut pages = 0;
    loop {
        let got = client.list_units(&page).await.unwrap();
        assert!(got.units.len() <= 3);
        seen.extend(got.units.into_iter().map(|u| u.name));
        pages += 1;
        match got.next_page_token {
            Some(token) => page.token = Some(token),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, names);

    let all: Vec<String> = client
        .all_units()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert_eq!(all, names);

    for bad in ["0", "-1", "many"] {
        let e = server
            .raw_error(
                "GET",
                &format!("{}/v1/units?limit={bad}", server.url),
                None,
                "",
            )
            .await;
        assert_eq!(
            (e.error.code, e.error.reason.as_str()),
            (400, "invalid_query")
        );
        assert!(e.error.message.contains("limit"), "{}", e.error.message);
    }
}

#[tokio::test]
async fn bad_unit_names_in_the_path() {
    let server = Server::start().await;
    for path in ["bad$name", "x.scope", "a@b@c.service"] {
        let e = server
            .raw_error("GET", &format!("{}/v1/units/{path}", server.url), None, "")
            .await;
        assert_eq!(
            (e.error.code, e.error.reason.as_str()),
            (400, "invalid_unit_name"),
            "{path}"
        );
        assert!(
            e.error.message.starts_with("unit name "),
            "{}",
            e.error.message
        );
    }
}
