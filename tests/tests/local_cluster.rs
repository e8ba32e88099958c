//! `rust_ms::testing::LocalCluster` as a service's tests use it: `user`, `order` and a
//! gateway in the test's own process on one in-memory registry, called through the
//! gateway's `/api` as a front end calls it.

use std::sync::Arc;

use rust_ms::testing::LocalCluster;
use serde_json::json;
use services::user::{MemoryUserStore, UserSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_user_and_a_gateway_in_one_process_answer_api_order_create() {
    let mut cluster = LocalCluster::new();
    let mut users = UserSettings::default();
    users.user.token_secret = "local-cluster-test-secret".into();
    let store = Arc::new(MemoryUserStore::new());
    cluster
        .start_with(services::user::service_with_store(store), users)
        .await
        .expect("a user node");
    cluster
        .start(services::order::service())
        .await
        .expect("an order node");
    cluster.start(gateway::service()).await.expect("a gateway");

    let registered = cluster
        .post(
            "/api/user/Register",
            &json!({ "username": "ada", "password": "correct horse battery" }),
            &[],
        )
        .await
        .expect("the gateway answers");
    assert_eq!(registered.status, 200, "{}", registered.text);

    let created = cluster
        .post(
            "/api/order/Create",
            &json!({ "username": "ada", "item": "book" }),
            &[],
        )
        .await
        .expect("the gateway answers");
    assert_eq!(created.status, 200, "{}", created.text);
    assert_eq!(created.body["order"]["username"], "ada", "{}", created.text);

    // order asked user through the cluster: an unknown user is user's NOT_FOUND.
    let unknown = cluster
        .post(
            "/api/order/Create",
            &json!({ "username": "nobody", "item": "book" }),
            &[],
        )
        .await
        .expect("the gateway answers");
    assert_eq!(unknown.status, 404, "{}", unknown.text);

    cluster.stop().await.expect("every node stops cleanly");
}
