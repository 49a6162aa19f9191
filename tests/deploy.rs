//! Deployment files, checked offline: the container build (deploy/build.sh,
//! run as the Dockerfile runs it, and the Dockerfile's HEALTHCHECK command
//! against the staged binary), every Kubernetes manifest against the
//! Kubernetes schemas (`kubernetes-validate --strict`), the pipelines inside
//! the ConfigMaps (`spanwire validate`), memory limits against the
//! memory_limiter, the IAM policies, and the CloudFormation template
//! (`cfn-lint`).

// Test code: an unwrap or expect that fails is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, python};
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv_bin(name: &str) -> PathBuf {
    let p = python().parent().unwrap().join(name);
    assert!(
        p.exists(),
        "{} is missing: run scripts/test, which installs it from tests/requirements.txt",
        p.display()
    );
    p
}

/// `(instruction, arguments)` of the Dockerfile's final stage.
fn final_stage(dockerfile: &str) -> Vec<(String, String)> {
    let joined = dockerfile.replace("\\\n", " ");
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for line in joined.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (ins, args) = line.split_once(' ').unwrap_or((line, ""));
        let ins = ins.to_ascii_uppercase();
        if ins == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("FROM first")
            .push((ins, args.trim().to_string()));
    }
    stages.pop().expect("a final stage")
}

#[test]
fn container_build_stages_a_runnable_image_with_a_working_healthcheck() {
    let dockerfile = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let stage = final_stage(&dockerfile);
    let get = |ins: &str| -> Vec<&str> {
        stage
            .iter()
            .filter(|(i, _)| i == ins)
            .map(|(_, a)| a.as_str())
            .collect()
    };
    assert!(
        get("FROM")[0].contains("distroless") || get("FROM")[0] == "scratch",
        "a small final image: {:?}",
        get("FROM")
    );
    let user = get("USER");
    assert_eq!(user.len(), 1);
    assert!(
        !user[0].starts_with("root") && !user[0].starts_with("0"),
        "runs as non-root: {user:?}"
    );
    let exposed: BTreeSet<&str> = get("EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .collect();
    assert_eq!(
        exposed,
        BTreeSet::from(["4317", "4318", "4320", "8888", "8889", "13133"])
    );
    assert!(dockerfile.contains("RUN deploy/build.sh /out"));
    assert!(get("COPY")
        .iter()
        .any(|c| c.contains("--from=build /out/ /")));
    let hc = get("HEALTHCHECK");
    assert_eq!(hc.len(), 1);
    let cmd_json = &hc[0][hc[0].find("CMD").expect("HEALTHCHECK CMD") + 3..];
    let hc_cmd: Vec<String> = serde_json::from_str(cmd_json.trim()).expect("exec-form CMD");
    let entry: Vec<String> = serde_json::from_str(get("ENTRYPOINT")[0]).unwrap();
    let cmd: Vec<String> = serde_json::from_str(get("CMD")[0]).unwrap();
    assert_eq!(entry, vec!["/usr/local/bin/spanwire"]);

    // Run the build script as the Dockerfile does (with the binary cargo
    // already built for these tests), into a fresh root.
    let out = tempfile::tempdir().unwrap();
    let status = Command::new(root().join("deploy/build.sh"))
        .arg(out.path())
        .env("SPANWIRE_BIN", env!("CARGO_BIN_EXE_spanwire"))
        .status()
        .unwrap();
    assert!(status.success());
    let in_image = |p: &str| out.path().join(p.trim_start_matches('/'));
    assert!(in_image("/usr/local/bin/spanwire").exists());
    let config = cmd
        .iter()
        .skip_while(|a| *a != "--config")
        .nth(1)
        .expect("CMD names the config")
        .clone();
    assert!(
        in_image(&config).exists(),
        "the CMD's config is in the image"
    );

    // Start it as the image would (entrypoint + CMD, paths inside the staged
    // root), on free loopback ports, and probe it with the HEALTHCHECK command.
    let health = free_port();
    let port = |_| format!("127.0.0.1:{}", free_port());
    let mut args: Vec<String> = cmd.clone();
    for a in args.iter_mut() {
        if a.starts_with('/') {
            *a = in_image(a).to_string_lossy().into_owned();
        }
    }
    let mut child = Command::new(in_image(&entry[0]))
        .args(&args)
        .env("SPANWIRE_OTLP_GRPC", port(()))
        .env("SPANWIRE_OTLP_HTTP", port(()))
        .env("SPANWIRE_BEDROCK", port(()))
        .env("SPANWIRE_PROMETHEUS", port(()))
        .env("SPANWIRE_SELF_METRICS", port(()))
        .env("SPANWIRE_HEALTH", format!("127.0.0.1:{health}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let probe = || {
        let mut c = hc_cmd.clone();
        c[0] = in_image(&c[0]).to_string_lossy().into_owned();
        for a in c.iter_mut() {
            *a = a.replace("127.0.0.1:13133", &format!("127.0.0.1:{health}"));
        }
        Command::new(&c[0])
            .args(&c[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut healthy = false;
    while Instant::now() < deadline {
        if probe() {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let exited = child.wait().unwrap();
    assert!(healthy, "the HEALTHCHECK never passed");
    assert!(exited.success(), "SIGTERM: clean exit");
    assert!(!probe(), "the HEALTHCHECK fails once spanwire is gone");
}

fn manifests() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("deploy/kubernetes"), &mut out);
    out.sort();
    out
}

fn load(p: &Path) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    assert_eq!(docs.len(), 1, "{}: one document", p.display());
    docs.remove(0)
}

fn kubernetes_validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(venv_bin("kubernetes-validate"))
        .arg("--strict")
        .args(files)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Mebibytes in a Kubernetes quantity such as `512Mi` or `1Gi`.
fn mib(q: &str) -> u64 {
    if let Some(n) = q.strip_suffix("Mi") {
        n.parse().unwrap()
    } else if let Some(n) = q.strip_suffix("Gi") {
        n.parse::<u64>().unwrap() * 1024
    } else {
        panic!("unexpected quantity {q}")
    }
}

#[test]
fn kubernetes_manifests_validate_and_their_pipelines_too() {
    let all = manifests();
    let (kustomizations, resources): (Vec<PathBuf>, Vec<PathBuf>) = all
        .into_iter()
        .partition(|p| p.file_name().unwrap() == "kustomization.yaml");
    assert_eq!(
        kustomizations.len(),
        6,
        "base, sidecar, kinesis-consumer, gateway-kinesis and the opt-in live-sidecar, live-daemonset components"
    );

    // Every kustomization lists files that exist, and every file is listed.
    let mut listed = BTreeSet::new();
    for k in &kustomizations {
        let y = load(k);
        for r in y["resources"].as_vec().unwrap() {
            let p = k.parent().unwrap().join(r.as_str().unwrap());
            assert!(
                p.exists(),
                "{} lists a missing {}",
                k.display(),
                p.display()
            );
            listed.insert(p);
        }
    }
    assert_eq!(listed, resources.iter().cloned().collect::<BTreeSet<_>>());

    // The Kubernetes schemas (strict: unknown fields are errors). CRDs have
    // no schema there and are checked below.
    let (crds, core): (Vec<PathBuf>, Vec<PathBuf>) = resources.iter().cloned().partition(|p| {
        load(p)["apiVersion"]
            .as_str()
            .unwrap()
            .contains("coreos.com")
    });
    let (ok, out) = kubernetes_validate(&core);
    assert!(ok, "{out}");
    assert_eq!(
        out.matches(" passed for resource ").count(),
        core.len(),
        "every manifest checked against a schema:\n{out}"
    );
    // The validator does reject what is wrong (an unknown field, a string port).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/base/daemonset.yaml"))
        .unwrap()
        .replace(
            "terminationGracePeriodSeconds: 40",
            "terminationGracePeriod: 40",
        );
    std::fs::write(&bad, text).unwrap();
    assert!(!kubernetes_validate(&[bad]).0, "an unknown field fails");

    // The PodMonitor selects the DaemonSet's pods and names its ports.
    let ds = load(&root().join("deploy/kubernetes/base/daemonset.yaml"));
    let pod_labels = &ds["spec"]["template"]["metadata"]["labels"];
    let port_names: BTreeSet<&str> = ds["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(crds.len(), 1);
    let pm = load(&crds[0]);
    assert_eq!(pm["kind"].as_str(), Some("PodMonitor"));
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_hash().unwrap() {
        assert_eq!(&pod_labels[k.as_str().unwrap()], v);
    }
    for e in pm["spec"]["podMetricsEndpoints"].as_vec().unwrap() {
        assert!(port_names.contains(e["port"].as_str().unwrap()));
    }

    // Every ConfigMap pipeline passes `spanwire validate` (with the
    // downward-API variables set), and each container that mounts one has a
    // memory limit above its memory_limiter's.
    let mut configs: BTreeMap<String, String> = BTreeMap::new();
    for p in &resources {
        let y = load(p);
        if y["kind"].as_str() == Some("ConfigMap") {
            let name = y["metadata"]["name"].as_str().unwrap().to_string();
            configs.insert(name, y["data"]["config.yaml"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(configs.len(), 7);
    for (name, text) in &configs {
        let f = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, text).unwrap();
        // The live components' configs are layered over the one they extend.
        let mut layers = Vec::new();
        if let Some(base) = name.strip_suffix("-live") {
            let b = dir.path().join(format!("{base}-base.yaml"));
            std::fs::write(&b, &configs[base]).unwrap();
            layers.push(b);
        }
        layers.push(f);
        let out = Command::new(env!("CARGO_BIN_EXE_spanwire"))
            .arg("validate")
            .args(
                layers
                    .iter()
                    .flat_map(|l| [std::ffi::OsStr::new("--config"), l.as_os_str()]),
            )
            .env("K8S_NODE_NAME", "node-1")
            .env("K8S_NODE_IP", "10.0.0.1")
            .env("K8S_POD_NAME", "pod-1")
            .env("K8S_POD_NAMESPACE", "agents")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ConfigMap {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut checked = 0;
    for p in &resources {
        let y = load(p);
        let spec = &y["spec"]["template"]["spec"];
        let Some(containers) = spec["containers"].as_vec() else {
            continue;
        };
        for c in containers
            .iter()
            .filter(|c| c["name"].as_str() == Some("spanwire"))
        {
            let volume = c["volumeMounts"][0]["name"].as_str().unwrap();
            let cm = spec["volumes"]
                .as_vec()
                .unwrap()
                .iter()
                .find(|v| v["name"].as_str() == Some(volume))
                .unwrap()["configMap"]["name"]
                .as_str()
                .unwrap();
            let cfg = YamlLoader::load_from_str(&configs[cm]).unwrap().remove(0);
            let ml = &cfg["processors"]["memory_limiter"];
            let limit = ml["limit_mib"].as_i64().unwrap() as u64;
            let container_limit = mib(c["resources"]["limits"]["memory"].as_str().unwrap());
            assert!(
                limit < container_limit,
                "{}: memory_limiter {limit} MiB must sit below the container's {container_limit} MiB",
                p.display()
            );
            assert!(
                c["livenessProbe"].as_hash().is_some() && c["readinessProbe"].as_hash().is_some()
            );
            checked += 1;
        }
    }
    assert_eq!(
        checked, 4,
        "DaemonSet, sidecar, Kinesis consumer, sessions gateway"
    );
    // The DaemonSet is reachable node-locally and tells spanwire its node.
    let svc = load(&root().join("deploy/kubernetes/base/service.yaml"));
    assert_eq!(svc["spec"]["internalTrafficPolicy"].as_str(), Some("Local"));
    let env: Vec<&str> = ds["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"K8S_NODE_NAME") && env.contains(&"K8S_POD_NAME"));
    let sa = load(&root().join("deploy/kubernetes/base/serviceaccount.yaml"));
    assert!(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
        .as_str()
        .is_some());
    let kc = load(&root().join("deploy/kubernetes/kinesis-consumer/deployment.yaml"));
    assert!(kc["spec"]["replicas"].as_i64().unwrap() >= 2);
    assert!(configs["spanwire-kinesis"].contains("store: dynamodb"));
    // The sessions gateway: replicas share leases and sample whole sessions;
    // the sidecars' side partitions by session.
    let gw = load(&root().join("deploy/kubernetes/gateway-kinesis/deployment.yaml"));
    assert!(gw["spec"]["replicas"].as_i64().unwrap() >= 2);
    let gw_cfg = &configs["spanwire-gateway-kinesis"];
    assert!(gw_cfg.contains("store: dynamodb") && gw_cfg.contains("group_by: session"));
    assert!(configs["spanwire-sidecar-kinesis"].contains("partition_key: session"));
    // The ConfigMaps are the pipelines/ files, not copies drifting apart.
    for (cm, file) in [
        ("spanwire-gateway-kinesis", "pipelines/gateway-kinesis.yaml"),
        ("spanwire-sidecar-kinesis", "pipelines/sidecar-kinesis.yaml"),
    ] {
        assert_eq!(
            configs[cm].trim_end(),
            std::fs::read_to_string(root().join(file))
                .unwrap()
                .trim_end(),
            "{cm}"
        );
    }

    // The live components: each JSON patch lands on the spanwire container
    // of its target, on fields that exist there; the sidecar's view stays on
    // localhost, the DaemonSet's is behind a Service with a token.
    for (component, target) in [
        ("live-sidecar", "sidecar/deployment.yaml"),
        ("live-daemonset", "base/daemonset.yaml"),
    ] {
        let k = load(&root().join(format!("deploy/kubernetes/{component}/kustomization.yaml")));
        assert_eq!(k["kind"].as_str(), Some("Component"));
        let manifest = load(&root().join(format!("deploy/kubernetes/{target}")));
        for p in k["patches"].as_vec().unwrap() {
            let ops = YamlLoader::load_from_str(p["patch"].as_str().unwrap())
                .unwrap()
                .remove(0);
            for op in ops.as_vec().unwrap() {
                let path = op["path"].as_str().unwrap();
                let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                let mut at = &manifest;
                for (i, part) in parts.iter().enumerate() {
                    if i == parts.len() - 1 && (*part == "-" || op["op"].as_str() == Some("add")) {
                        break;
                    }
                    at = match part.parse::<usize>() {
                        Ok(n) => &at[n],
                        Err(_) => &at[*part],
                    };
                    assert!(!at.is_badvalue(), "{component}: {path} is not in {target}");
                    if i > 0 && parts[i - 1] == "containers" {
                        assert_eq!(at["name"].as_str(), Some("spanwire"), "{component}: {path}");
                    }
                }
            }
        }
    }
    let sidecar_live = &configs["spanwire-sidecar-live"];
    assert!(sidecar_live.contains("endpoint: localhost:4321"));
    let daemonset_live = &configs["spanwire-daemonset-live"];
    assert!(daemonset_live.contains("bearer_token_file"));
    let live_svc = load(&root().join("deploy/kubernetes/live-daemonset/service.yaml"));
    assert_eq!(
        live_svc["spec"]["ports"][0]["targetPort"].as_str(),
        Some("live")
    );
    assert!(
        !port_names.contains("live"),
        "the base DaemonSet does not expose the live port unless asked"
    );
}

#[test]
fn iam_policies_are_least_privilege_and_the_template_lints_clean() {
    let expected: [(&str, &[&str]); 6] = [
        (
            "kinesis-producer.json",
            &["kinesis:ListShards", "kinesis:PutRecords"],
        ),
        (
            "kinesis-gateway.json",
            &[
                "dynamodb:CreateTable",
                "dynamodb:DescribeTable",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Scan",
                "dynamodb:UpdateItem",
                "kinesis:DescribeStreamSummary",
                "kinesis:GetRecords",
                "kinesis:GetShardIterator",
                "kinesis:ListShards",
                "xray:PutTraceSegments",
            ],
        ),
        (
            "otlp-endpoints.json",
            &[
                "logs:PutLogEvents",
                "xray:PutSpans",
                "xray:PutSpansForIndexing",
            ],
        ),
        ("xray-exporter.json", &["xray:PutTraceSegments"]),
        (
            "cloudwatch-exporters.json",
            &[
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:PutLogEvents",
                "logs:PutRetentionPolicy",
            ],
        ),
        (
            "kinesis-receiver.json",
            &[
                "dynamodb:CreateTable",
                "dynamodb:DescribeTable",
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:Scan",
                "dynamodb:UpdateItem",
                "kinesis:DescribeStreamSummary",
                "kinesis:GetRecords",
                "kinesis:GetShardIterator",
                "kinesis:ListShards",
            ],
        ),
    ];
    for (file, want) in expected {
        let v: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(root().join("deploy/iam").join(file)).unwrap(),
        )
        .unwrap();
        assert_eq!(v["Version"], "2012-10-17");
        let mut actions = BTreeSet::new();
        for s in v["Statement"].as_array().unwrap() {
            assert_eq!(s["Effect"], "Allow");
            for a in s["Action"].as_array().unwrap() {
                let a = a.as_str().unwrap();
                assert!(!a.contains('*'), "{file}: wildcard action {a}");
                actions.insert(a.to_string());
            }
            let res = s["Resource"].as_str().unwrap();
            // Only X-Ray's actions have no resource-level permission.
            if res == "*" {
                assert!(
                    s["Action"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .all(|a| a.as_str().unwrap().starts_with("xray:")),
                    "{file}: {s}"
                );
            } else {
                assert!(res.starts_with("arn:aws:"), "{file}: {res}");
            }
        }
        assert_eq!(
            actions,
            want.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
            "{file}"
        );
    }
    let out = Command::new(venv_bin("cfn-lint"))
        .arg(root().join("deploy/cloudformation/aws-spans-to-kinesis.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cfn-lint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
