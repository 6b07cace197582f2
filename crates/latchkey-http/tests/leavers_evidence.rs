//! The evidence report and leavers: disabled and deleted users leave the
//! coverage figures; the report lists the period's leavers with the time
//! from the change at its source to Latchkey's revocation, and the active
//! users without a backup method, in JSON, CSV and HTML. Runs on SQLite and
//! (with `LATCHKEY_TEST_POSTGRES_URL`) PostgreSQL.

#[macro_use]
mod common;

use axum::http::{Method, StatusCode};
use common::Harness;
use serde_json::json;

backends! {
    case_leavers_and_missing_backups_are_in_the_report => sqlite_leavers_and_missing_backups_are_in_the_report, postgres_leavers_and_missing_backups_are_in_the_report;
}

// The harness clock starts on 2023-11-14.
const PERIOD: &str = "from=2023-11-01&to=2023-11-30";

async fn report(h: &Harness, format: &str) -> common::Resp {
    let r = h
        .get(
            &format!("/api/v1/reports/evidence?{PERIOD}&format={format}"),
            Some(&h.admin.clone()),
        )
        .await;
    r.expect(StatusCode::OK);
    r
}

async fn case_leavers_and_missing_backups_are_in_the_report(h: Harness) {
    for u in ["ada", "leo", "dan"] {
        h.user_with_totp(u, &[]).await;
    }
    h.create_user("nomfa", &[]).await;
    // Ada has recovery codes as her backup; the others have one factor only.
    h.post(
        "/api/v1/users/ada/methods/recovery-codes",
        Some(&h.admin.clone()),
        json!({}),
    )
    .await
    .expect(StatusCode::CREATED);
    let before = report(&h, "json").await.json;
    assert_eq!(before["summary"]["users"], 4, "{}", before["summary"]);
    assert_eq!(before["summary"]["users_without_backup"], 3, "{}", before["summary"]);
    assert_eq!(before["summary"]["leavers"], 0);

    h.post(
        "/api/v1/users/leo/disable",
        Some(&h.admin.clone()),
        json!({ "reason": "left the company" }),
    )
    .await
    .expect(StatusCode::OK);
    h.advance(60);
    h.call(
        Method::DELETE,
        "/api/v1/users/dan",
        Some(&h.admin.clone()),
        Some(json!({ "reason": "contract ended" })),
    )
    .await
    .expect(StatusCode::OK);
    // A disabled account deleted later is not a second leaver.
    h.call(
        Method::DELETE,
        "/api/v1/users/leo",
        Some(&h.admin.clone()),
        Some(json!({ "reason": "retention period over" })),
    )
    .await
    .expect(StatusCode::OK);

    let j = report(&h, "json").await.json;
    let s = &j["summary"];
    // Leavers are out of coverage: ada and nomfa remain.
    assert_eq!(s["users"], 2, "{s}");
    assert_eq!(s["users_with_mfa"], 1, "{s}");
    assert_eq!(s["leavers"], 2, "{s}");
    // A local change: the source is the administrator's request, revoked in the same transaction.
    assert_eq!(s["leavers_longest_revocation_secs"], 0, "{s}");
    let leavers = j["leavers"].as_array().unwrap();
    let names: Vec<&str> = leavers.iter().map(|l| l["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["leo", "dan"]);
    assert_eq!(leavers[0]["state"], "disabled");
    assert_eq!(leavers[0]["reason"], "left the company");
    assert_eq!(leavers[0]["source"], "local");
    assert_eq!(leavers[0]["revocation_secs"], 0);
    assert_eq!(leavers[1]["state"], "deleted");
    assert!(leavers[0]["source_changed_at"].as_i64().unwrap() < leavers[1]["source_changed_at"].as_i64().unwrap());
    let no_backup: Vec<&str> = j["without_backup"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(no_backup, ["nomfa"], "ada has codes; leo and dan left");

    // The same sections in the CSV and the HTML.
    let csv = report(&h, "csv").await.text();
    let leavers_csv: Vec<&str> = csv
        .lines()
        .skip_while(|l| !l.starts_with("# leavers"))
        .skip(1)
        .take_while(|l| !l.starts_with("# "))
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(leavers_csv.len(), 3, "header and two leavers: {leavers_csv:?}");
    assert!(leavers_csv[0].contains("revocation_secs"), "{}", leavers_csv[0]);
    assert!(
        leavers_csv[1].starts_with("leo,") && leavers_csv[1].ends_with(",0"),
        "{}",
        leavers_csv[1]
    );
    assert!(csv.contains("# users_without_backup"));
    let html = report(&h, "html").await.text();
    assert!(html.contains("Leavers in the period") && html.contains("left the company"));
    assert!(html.contains("Active users without a backup method") && html.contains("nomfa"));
}
