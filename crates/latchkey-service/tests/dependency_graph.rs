//! The layering, checked on the real dependency graph (`cargo metadata`):
//! the service knows no HTTP framework or HTML templating, the domain core
//! does no I/O, and nothing below a transport depends on one.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// Package name → names of its normal (non-dev, non-build) dependencies.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = Command::new(rustc).arg("-vV").output().expect("rustc -vV runs");
    let version = String::from_utf8_lossy(&version.stdout);
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc names its host")
        .trim()
        .to_owned();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // This platform's graph only: the one that is built (and downloaded).
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
            &host,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let deps = n["deps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()))
                .map(|d| name_of[d["pkg"].as_str().unwrap()].to_owned())
                .collect();
            (name_of[n["id"].as_str().unwrap()].to_owned(), deps)
        })
        .collect()
}

fn transitive(g: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    transitive_except(g, root, &[])
}

/// What `root` reaches without looking inside the packages in `opaque`.
fn transitive_except(g: &BTreeMap<String, BTreeSet<String>>, root: &str, opaque: &[&str]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_owned()];
    while let Some(p) = todo.pop() {
        for d in g.get(&p).into_iter().flatten() {
            if seen.insert(d.clone()) && !opaque.contains(&d.as_str()) {
                todo.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn the_service_has_no_http_framework_or_templating() {
    let g = graph();
    let direct = &g["latchkey-service"];
    for banned in [
        "axum",
        "axum-core",
        "axum-extra",
        "axum-server",
        "hyper",
        "tower",
        "tower-http",
        "maud",
    ] {
        assert!(
            !direct.contains(banned),
            "latchkey-service depends on {banned} directly"
        );
    }
    // reqwest (the outbound client for SMS and alert webhooks) uses hyper,
    // tower and tower-http's client middleware inside; nothing may bring a
    // server framework or templating, and nothing else any tower-http.
    let all = transitive(&g, "latchkey-service");
    for banned in [
        "axum",
        "axum-core",
        "axum-extra",
        "axum-server",
        "maud",
        "latchkey-http",
        "latchkey-radius",
    ] {
        assert!(!all.contains(banned), "latchkey-service reaches {banned}");
    }
    let own = transitive_except(&g, "latchkey-service", &["reqwest"]);
    for banned in ["hyper", "tower", "tower-http"] {
        assert!(
            !own.contains(banned),
            "latchkey-service reaches {banned} other than through reqwest"
        );
    }
    assert!(
        all.contains("latchkey-core") && all.contains("latchkey-store"),
        "graph was read: {direct:?}"
    );
}

#[test]
fn the_core_does_no_io_and_the_store_knows_no_service() {
    let g = graph();
    let core = transitive(&g, "latchkey-core");
    for banned in ["tokio", "sqlx", "reqwest", "latchkey-store"] {
        assert!(!core.contains(banned), "latchkey-core reaches {banned}");
    }
    let store = transitive(&g, "latchkey-store");
    for banned in ["latchkey-service", "latchkey-http", "latchkey-radius", "axum", "maud"] {
        assert!(!store.contains(banned), "latchkey-store reaches {banned}");
    }
}

#[test]
fn transports_do_not_depend_on_each_other() {
    let g = graph();
    assert!(!transitive(&g, "latchkey-http").contains("latchkey-radius"));
    let radius = transitive(&g, "latchkey-radius");
    for banned in ["latchkey-http", "axum", "maud"] {
        assert!(!radius.contains(banned), "latchkey-radius reaches {banned}");
    }
}
