//! `/v1/machines`: listing with pages, metadata patches.

use flotilla_api::client::PageQuery;
use flotilla_proto::wire::MachinePatch;

use crate::{Server, machine, machine_id};

#[tokio::test]
async fn list_in_pages() {
    let server = Server::start().await;
    let client = server.client();
    for n in [3, 1, 2, 5, 4] {
        server
            .agent(n)
            .await
            .register_machine(&machine(n))
            .await
            .unwrap();
    }
    let first = client
        .list_machines(&PageQuery {
            token: None,
            limit: Some(2),
        })
        .await
        .unwrap();
    assert_eq!(first.machines.len(), 2);
    assert_eq!(first.machines[0].machine.id, machine_id(1));
    assert_eq!(first.machines[0].primary_ip.as_deref(), Some("10.0.0.1"));
    assert!(first.next_page_token.is_some());

    let all = client.all_machines().await.unwrap();
    let ids: Vec<_> = all.iter().map(|m| m.machine.id.clone()).collect();
    assert_eq!(ids, (1..=5).map(machine_id).collect::<Vec<_>>());
    assert_eq!(all[4].machine, machine(5));
}

#[tokio::test]
async fn patch_metadata() {
    let server = Server::start().await;
    let client = server.client();
    server
        .agent(1)
        .await
        .register_machine(&machine(1))
        .await
        .unwrap();
    let patch = MachinePatch {
        metadata: [
            ("disk".to_owned(), Some("ssd".to_owned())),
            ("role".to_owned(), None),
        ]
        .into(),
    };
    let resource = client.patch_machine(&machine_id(1), &patch).await.unwrap();
    assert_eq!(
        resource.machine.metadata,
        [("disk".to_owned(), "ssd".to_owned())].into()
    );

    let e = client
        .patch_machine(&machine_id(9), &patch)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");

    let e = server
        .raw_error(
            "PATCH",
            &format!("{}/v1/machines/node-1", server.url),
            Some("application/json"),
            r#"{"metadata":{}}"#,
        )
        .await;
    assert_eq!(
        (e.error.code, e.error.reason.as_str()),
        (400, "invalid_machine_id")
    );
    assert!(e.error.message.contains("node-1"), "{}", e.error.message);
}
