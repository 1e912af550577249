//! The hub's status page at `/` behind a login: a browser without a token gets a Basic
//! challenge and a page that says which tokens work; the admin token or a viewer token (as
//! the Basic password or a bearer token) opens it; a revoked viewer token, a metrics token or a
//! node's business don't; `--public-status` opens it to anyone, and nothing else with it.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::Hub;
use common::http::{Auth, get};
use common::process::spawn_gatehouse;
use std::time::Duration;

#[test]
fn the_status_page_needs_the_admin_token_or_a_viewer_token() {
    let hub = Hub::start();
    hub.create_gateway("secret-plans", &[]);
    let page = format!("{}/", hub.url);

    let anonymous = get(&page, Auth::None);
    assert_eq!(anonymous.status, 401);
    assert!(anonymous.challenge.as_deref().is_some_and(|c| c.starts_with("Basic ")), "a browser asks for it");
    assert!(anonymous.body.contains("hub token create --viewer"), "{}", anonymous.body);
    assert!(!anonymous.body.contains("secret-plans"), "nothing of the gateways leaks: {}", anonymous.body);

    let viewer = hub.admin(&["hub", "token", "create", "--viewer"]);
    let token = viewer["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("ghv_"), "{token}");
    for auth in [
        Auth::Basic { user: "anyone", password: &token },
        Auth::Bearer(&token),
        Auth::Basic { user: "", password: &hub.token },
        Auth::Bearer(&hub.token),
    ] {
        let answer = get(&page, auth);
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.body.contains("secret-plans"), "{}", answer.body);
    }

    // A viewer token reads the page and nothing else; a metrics token doesn't read it.
    assert_eq!(get(&format!("{}/api/v1/gateways", hub.url), Auth::Bearer(&token)).status, 401);
    assert_eq!(get(&format!("{}/metrics", hub.url), Auth::Bearer(&token)).status, 401);
    let metrics = hub.admin(&["hub", "token", "create", "--metrics"]);
    let metrics_token = metrics["token"].as_str().unwrap();
    assert_eq!(get(&page, Auth::Bearer(metrics_token)).status, 401);
    assert_eq!(get(&page, Auth::Basic { user: "x", password: "gha_wrong" }).status, 401);

    hub.admin(&["hub", "token", "revoke", viewer["id"].as_str().unwrap()]);
    let revoked = get(&page, Auth::Basic { user: "anyone", password: &token });
    assert_eq!(revoked.status, 401);
    assert!(revoked.body.contains("not valid"), "{}", revoked.body);

    let audit = hub.admin(&["hub", "audit"]).to_string();
    assert!(audit.contains("viewer token") && audit.contains("token.revoke"), "{audit}");
    assert!(!audit.contains(&token), "the audit trail never holds a token");
}

#[test]
fn a_public_status_page_opens_to_anyone_but_the_api_does_not() {
    let home = tempfile::tempdir().unwrap();
    let mut process = spawn_gatehouse(
        &["hub", "serve", "--listen", "127.0.0.1:0", "--public-status"],
        &[("GATEHOUSE_HOME", home.path().to_str().unwrap())],
    );
    let url = process.read_line_matching("listening on ", Duration::from_secs(30));
    let page = get(&format!("{url}/"), Auth::None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("<html"), "{}", page.body);
    assert_eq!(get(&format!("{url}/api/v1/gateways"), Auth::None).status, 401);
    assert_eq!(
        get(&format!("{url}/metrics"), Auth::None).status,
        401,
        "--public-status leaves /metrics alone"
    );
}
