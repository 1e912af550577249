//! Copy activities end to end: a real hub and real `gatehouse node run` processes on loopback
//! copy folders to a `file://` sink; the sink must equal the source byte for byte, a second
//! run must write nothing, and every refusal and fault must say what happened and leave
//! nothing half-written. Every wait is bounded.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

mod common;

use common::cluster::{Hub, gateway, submit, wait_over, wait_until};
use common::s3::S3Api;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn copy_job(source: &Path, sink: &Path, extra: &serde_json::Value) -> serde_json::Value {
    let mut activity = serde_json::json!({
        "kind": "copy",
        "source": { "folder": source },
        "sink": { "url": format!("file://{}/", sink.display()) },
    });
    if let (Some(activity), Some(extra)) = (activity.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            if key == "source" {
                for (k, v) in value.as_object().unwrap() {
                    activity["source"][k] = v.clone();
                }
            } else {
                activity.insert(key.clone(), value.clone());
            }
        }
    }
    serde_json::json!({ "name": "nightly", "activities": [activity] })
}

/// A source tree: nested folders, empty files, unicode and spaces, many small files and one
/// larger than several parts (parts are 8 MiB).
fn make_source(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut add = |path: &str, bytes: Vec<u8>| {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, &bytes).unwrap();
        files.insert(path.to_owned(), bytes);
    };
    for i in 0..60 {
        add(
            &format!("daily/{:02}/orders-{i}.csv", i % 7),
            format!("id,amount\n{i},{}\n", i * 3).into_bytes(),
        );
    }
    add("empty.csv", Vec::new());
    add("deep/a/b/c/d/leaf.csv", b"leaf\n".to_vec());
    add("ünïcödé folder/naïve file name.csv", "h\u{e9}llo w\u{f6}rld\n".as_bytes().to_vec());
    add("with space/50% off #1.csv", b"odd names\n".to_vec());
    #[allow(clippy::cast_possible_truncation, reason = "test data: any byte will do")]
    let big: Vec<u8> = (0..(21u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    add("big/large.bin", big);
    add("tmp/scratch.csv", b"skip me\n".to_vec());
    add("notes.txt", b"not a csv\n".to_vec());
    files
}

/// Every regular file under `root`, by relative path (hidden staging files included, so a
/// leftover shows).
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in walk(root) {
        let relative = entry.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
        files.insert(relative, std::fs::read(&entry).unwrap());
    }
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() { found.extend(walk(&path)) } else { found.push(path) }
    }
    found
}

fn results(job: &serde_json::Value) -> Vec<serde_json::Value> {
    job["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["partition"] != 0)
        .map(|r| r["result"].clone())
        .collect()
}

fn sum(results: &[serde_json::Value], key: &str) -> u64 {
    results.iter().map(|r| r[key].as_u64().unwrap_or(0)).sum()
}

#[test]
fn a_folder_copied_by_three_nodes_equals_its_source_and_a_second_run_writes_nothing() {
    let (hub, _nodes) = gateway(3);
    let source = tempfile::tempdir().unwrap();
    let sink = tempfile::tempdir().unwrap();
    let mut expected = make_source(source.path());
    let spec = copy_job(
        source.path(),
        sink.path(),
        &serde_json::json!({ "source": { "include": ["**/*.csv", "big/**"], "exclude": ["tmp/**"] } }),
    );

    let job = wait_over(&hub, &submit(&hub, &spec).unwrap());
    assert_eq!(job["state"], "succeeded", "{job:#}");
    expected.retain(|path, _| {
        Path::new(path).extension().is_some_and(|e| e == "csv") && !path.starts_with("tmp/")
            || path.starts_with("big/")
    });
    let copied = tree(sink.path());
    assert_eq!(
        copied.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the same files, nothing else"
    );
    assert!(copied == expected, "byte for byte");
    let runs = job["runs"].as_array().unwrap();
    let nodes: std::collections::BTreeSet<&str> =
        runs.iter().filter(|r| r["partition"] != 0).filter_map(|r| r["node_name"].as_str()).collect();
    assert!(runs.len() > 4, "the listing split into several parts: {}", runs.len());
    assert!(nodes.len() >= 2, "parts ran on several nodes: {nodes:?} {job:#}");
    assert_eq!(sum(&results(&job), "written"), expected.len() as u64);

    let again = wait_over(&hub, &submit(&hub, &spec).unwrap());
    assert_eq!(again["state"], "succeeded", "{again:#}");
    let results = results(&again);
    assert_eq!(sum(&results, "written"), 0, "nothing written again: {results:?}");
    assert_eq!(sum(&results, "skipped"), expected.len() as u64);
    assert!(tree(sink.path()) == expected, "the sink is unchanged");
}

#[test]
fn an_object_that_differs_fails_its_file_unless_overwrite() {
    let (hub, _nodes) = gateway(1);
    let source = tempfile::tempdir().unwrap();
    let sink = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("a.csv"), b"new\n").unwrap();
    std::fs::write(sink.path().join("a.csv"), b"old\n").unwrap();

    let job = wait_over(
        &hub,
        &submit(&hub, &copy_job(source.path(), sink.path(), &serde_json::json!({}))).unwrap(),
    );
    assert_eq!(job["state"], "failed");
    let error = job["runs"].as_array().unwrap().iter().find_map(|r| r["error"].as_str()).unwrap().to_owned();
    assert!(error.contains("a.csv") && error.contains("overwrite"), "{error}");
    assert_eq!(std::fs::read(sink.path().join("a.csv")).unwrap(), b"old\n", "left as it was");
    assert_eq!(tree(sink.path()).len(), 1, "no staging file left");

    let spec = copy_job(source.path(), sink.path(), &serde_json::json!({ "overwrite": true }));
    let job = wait_over(&hub, &submit(&hub, &spec).unwrap());
    assert_eq!(job["state"], "succeeded", "{job:#}");
    assert_eq!(std::fs::read(sink.path().join("a.csv")).unwrap(), b"new\n");
}

#[test]
fn a_source_folder_a_node_cant_see_fails_with_the_node_and_the_path() {
    let (hub, _nodes) = gateway(1);
    let sink = tempfile::tempdir().unwrap();
    let spec = copy_job(Path::new("/nonexistent/exports"), sink.path(), &serde_json::json!({}));
    let job = wait_over(&hub, &submit(&hub, &spec).unwrap());
    assert_eq!(job["state"], "failed");
    let error = job["runs"][0]["error"].as_str().unwrap();
    assert!(error.contains("node n1") && error.contains("/nonexistent/exports"), "{error}");
    assert!(tree(sink.path()).is_empty());
}

#[test]
fn bad_specs_are_refused_at_submit_with_what_to_use_instead() {
    let hub = Hub::start();
    hub.create_gateway("lake", &[]);
    let sink = tempfile::tempdir().unwrap();
    let cases = [
        (copy_job(Path::new("exports"), sink.path(), &serde_json::json!({})), "absolute path"),
        (
            copy_job(
                Path::new("/srv/x"),
                sink.path(),
                &serde_json::json!({ "source": { "recursive": true } }),
            ),
            "recursive",
        ),
        (
            serde_json::json!({ "name": "j", "activities": [{ "kind": "copy", "source": { "folder": "/srv" }, "sink": { "url": "gs://b/p/" } }] }),
            "s3://bucket/prefix/",
        ),
        (
            serde_json::json!({ "name": "j", "activities": [{ "kind": "copy", "source": { "folder": "/srv" },
                "sink": { "url": "s3://lake/p/", "credential": "nobody-has-it" } }] }),
            "nobody-has-it",
        ),
    ];
    for (spec, says) in cases {
        let error = submit(&hub, &spec).expect_err("refused");
        assert!(error.contains(says), "{error:?} should say {says:?}");
    }
}

#[test]
fn a_folder_copied_to_s3_equals_its_source_carries_checksums_and_leaves_no_uploads() {
    copy_to_s3(&common::s3::SeaweedFs::start());
}

#[test]
fn a_folder_copied_to_a_second_s3_implementation_moto_is_the_same() {
    copy_to_s3(&common::moto::Moto::start());
}

/// Three nodes copy the source tree to `s3`: every file once, byte for byte, with its SHA-256
/// in its metadata, no multipart upload left; a second run uploads nothing.
fn copy_to_s3(s3: &S3Api) {
    let (hub, nodes) = gateway(3);
    nodes[0].set_credential("lake", &s3.credential());
    wait_until(Duration::from_secs(30), "every node to hold the credential", || {
        hub.nodes("lake").iter().all(|n| n["metrics"]["credential_names"] == serde_json::json!(["lake"]))
    });
    let source = tempfile::tempdir().unwrap();
    let expected = make_source(source.path());
    let spec = serde_json::json!({ "name": "nightly", "activities": [{
        "kind": "copy",
        "source": { "folder": source.path() },
        "sink": { "url": format!("s3://{}/exports/", s3.bucket()), "endpoint": s3.endpoint(),
                  "region": s3.region(), "credential": "lake" },
    }]});

    let job = wait_over(&hub, &submit(&hub, &spec).unwrap());
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let objects: BTreeMap<String, u64> = s3.list_objects("exports/").into_iter().collect();
    let keys: Vec<String> = expected.keys().map(|k| format!("exports/{k}")).collect();
    assert_eq!(objects.keys().cloned().collect::<Vec<_>>(), keys, "every file once, nothing else");
    for (path, bytes) in &expected {
        let key = format!("exports/{path}");
        assert!(s3.get_object(&key) == *bytes, "{key} byte for byte");
        let sha256 = gatehouse::encoding::hex(&<sha2::Sha256 as sha2::Digest>::digest(bytes));
        assert_eq!(s3.head_metadata(&key).get("sha256"), Some(&sha256), "{key} carries its SHA-256");
    }
    assert!(s3.list_multipart_uploads("").is_empty(), "no unfinished multipart upload");

    let again = wait_over(&hub, &submit(&hub, &spec).unwrap());
    assert_eq!(again["state"], "succeeded", "{again:#}");
    assert_eq!(sum(&results(&again), "written"), 0, "nothing uploaded again");
}
