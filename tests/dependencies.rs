//! The crate graph's rules (docs/ARCHITECTURE.md), checked on `cargo metadata`: each crate links
//! only what its purpose needs, so that, e.g., a Ballista executor of familiar's SQL does not
//! compile a transformer, and a library user of the n-gram queries does not compile the builder.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

/// Normal (non-dev, non-build) dependencies of each package, transitively, by package name.
fn closure() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let name_of: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut direct: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| d["pkg"].as_str().unwrap())
            .collect();
        direct.insert(node["id"].as_str().unwrap(), deps);
    }
    let mut out = BTreeMap::new();
    for member in meta["workspace_members"].as_array().unwrap() {
        let id = member.as_str().unwrap();
        let mut seen = BTreeSet::new();
        let mut todo = vec![id];
        while let Some(x) = todo.pop() {
            for &d in direct.get(x).map(Vec::as_slice).unwrap_or(&[]) {
                if seen.insert(d) {
                    todo.push(d);
                }
            }
        }
        out.insert(
            name_of[id].to_string(),
            seen.iter().map(|d| name_of[d].to_string()).collect(),
        );
    }
    out
}

#[test]
fn each_crate_links_only_what_its_purpose_needs() {
    let deps = closure();
    let rules: [(&str, &[&str]); 7] = [
        (
            "familiar",
            &[
                "datafusion",
                "familiar-index-builder",
                "candle-core",
                "tantivy",
                "familiar-query",
                "familiar-sql",
                "familiar-models",
                "familiar-text",
                "indicatif",
            ],
        ),
        ("familiar-sql", &["candle-core", "tantivy", "familiar-text"]),
        (
            "familiar-query",
            &[
                "familiar-index-builder",
                "candle-core",
                "familiar-models",
                "datafusion",
                "indicatif",
            ],
        ),
        ("familiar-text", &["candle-core", "datafusion"]),
        (
            "familiar-index-builder",
            &["candle-core", "datafusion", "familiar-query"],
        ),
        (
            "familiar-models",
            &["datafusion", "tantivy", "familiar-index-builder"],
        ),
        // The service answers from indexes and tables: no models, no builds, no bars.
        (
            "familiar-serve",
            &[
                "candle-core",
                "familiar-models",
                "familiar-index-builder",
                "indicatif",
            ],
        ),
    ];
    // The closure is computed (else every rule below would hold trivially).
    for (krate, needs) in [
        ("familiar-models", "candle-core"),
        ("familiar-text", "tantivy"),
        ("familiar-sql", "datafusion"),
        ("familiar-sql", "familiar"),
        ("familiar-cli", "familiar-index-builder"),
        ("familiar-cli", "indicatif"),
    ] {
        assert!(deps[krate].contains(needs), "{krate} should link {needs}");
    }
    let mut broken = Vec::new();
    for (krate, forbidden) in rules {
        let linked = deps
            .get(krate)
            .unwrap_or_else(|| panic!("{krate} is not a workspace member"));
        for f in forbidden {
            if linked.contains(*f) {
                broken.push(format!("{krate} links {f}"));
            }
        }
    }
    // Libraries report progress through callbacks; only the front end draws bars.
    for krate in [
        "familiar",
        "familiar-text",
        "familiar-index-builder",
        "familiar-query",
        "familiar-sql",
        "familiar-models",
        "familiar-reports",
        "familiar-serve",
    ] {
        if deps[krate].contains("indicatif") {
            broken.push(format!(
                "{krate} links indicatif (libraries draw no progress bars)"
            ));
        }
    }
    for (krate, linked) in &deps {
        if linked.contains("familiar-cli") {
            broken.push(format!("{krate} depends on the CLI crate"));
        }
    }
    assert!(broken.is_empty(), "crate graph rules broken: {broken:?}");
}
