//! `deploy/kubernetes/`: every manifest parses, the built-in kinds pass the
//! Kubernetes JSON schemas (kubernetes-validate --strict), and the
//! cross-references hold: ports vs the ConfigMap's cutover.toml, probe paths
//! vs the admin routes, preStop + terminationGracePeriodSeconds vs
//! shutdown_timeout_ms, Secret keys vs the CUTOVER_* variables the binary
//! reads, image paths and uid vs the Dockerfile.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use cutover::config::{Config, Overrides};
use cutover::control::admin::ROUTES;
use yaml_serde::Value;

use crate::docker::Dockerfile;
use crate::support::binary::repo_path;
use crate::{env_vars_read, read, run, tool};

const DIR: &str = "deploy/kubernetes";

/// Every document of every file, by `kind/name`.
fn manifests() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for file in resources() {
        let text = read(&format!("{DIR}/{file}"));
        for doc in yaml_serde::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            let key = format!("{}/{}", s(&v["kind"]), s(&v["metadata"]["name"]));
            assert!(out.insert(key.clone(), v).is_none(), "{key} defined twice");
        }
    }
    out
}

use serde::Deserialize;

fn s(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v:?}"))
}

/// The files `kustomization.yaml` lists; they must be all the YAML files of the directory.
fn resources() -> Vec<String> {
    let k: Value = yaml_serde::from_str(&read(&format!("{DIR}/kustomization.yaml"))).unwrap();
    let listed: Vec<String> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| s(r).to_string())
        .collect();
    let mut on_disk: Vec<String> = std::fs::read_dir(repo_path(DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    on_disk.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(
        sorted, on_disk,
        "kustomization.yaml resources vs files in {DIR}"
    );
    listed
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod[list]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} entry {name}"))
}

fn env_of(c: &Value) -> BTreeMap<String, Value> {
    c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| (s(&e["name"]).to_string(), e.clone()))
        .collect()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// A probe's path: httpGet.path, or the path argument of the exec health check.
fn probe_path(p: &Value, healthcheck: &str) -> String {
    if let Some(path) = p["httpGet"]["path"].as_str() {
        return path.to_string();
    }
    let cmd: Vec<&str> = p["exec"]["command"]
        .as_sequence()
        .expect("httpGet or exec probe")
        .iter()
        .map(s)
        .collect();
    assert_eq!(
        cmd[0], healthcheck,
        "exec probes use the image's health check script"
    );
    cmd[1].to_string()
}

#[test]
fn manifests_pass_the_kubernetes_schemas() {
    let files: Vec<_> = resources()
        .iter()
        .map(|f| repo_path(&format!("{DIR}/{f}")))
        .collect();
    let out = run(Command::new(tool("kubernetes-validate"))
        .arg("--strict")
        .args(&files));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate:\n{text}");
    for kind in [
        "configmap/",
        "secret/",
        "persistentvolumeclaim/",
        "deployment/",
        "service/",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind} not validated:\n{text}"
        );
    }
    for line in text.lines().filter(|l| l.starts_with("WARN")) {
        // Only the Prometheus Operator CRD has no built-in schema (checked by hand below).
        assert!(line.contains("kind ServiceMonitor"), "{line}");
    }
}

/// The example as the cluster would run it: the manifests, the cutover and
/// app containers, their environment resolved from the Secret, and the
/// ConfigMap's cutover.toml loaded the way the container loads it.
struct Example {
    m: BTreeMap<String, Value>,
    pod: Value,
    cut: Value,
    /// Resolved environment: cutover's variables by name, the app's as `app:NAME`.
    env: BTreeMap<String, String>,
    cfg: Config,
    /// cutover's named container ports.
    ports: BTreeMap<String, u64>,
    mounts: BTreeMap<String, Value>,
    volumes: BTreeMap<String, Value>,
    dockerfile: Dockerfile,
}

impl Example {
    fn load() -> Example {
        let m = manifests();
        let pod = m["Deployment/shop"]["spec"]["template"]["spec"].clone();
        let cut = container(&pod, "initContainers", "cutover").clone();
        let app = container(&pod, "containers", "shop").clone();
        let env = resolve_env(&m, &cut, &app);
        let by = |list: &Value, key: &str| -> BTreeMap<String, Value> {
            list.as_sequence()
                .unwrap()
                .iter()
                .map(|v| (s(&v[key]).to_string(), v.clone()))
                .collect()
        };
        let mounts = by(&cut["volumeMounts"], "mountPath");
        let volumes = by(&pod["volumes"], "name");
        let ports = by(&cut["ports"], "name")
            .into_iter()
            .map(|(k, v)| (k, v["containerPort"].as_u64().unwrap()))
            .collect();
        let cfg = load_config(&m, &cut, &env, &mounts, &volumes);
        Example {
            m,
            pod,
            cut,
            env,
            cfg,
            ports,
            mounts,
            volumes,
            dockerfile: Dockerfile::load(),
        }
    }
}

/// Every `env` entry of both containers, with secretKeyRefs checked and resolved.
fn resolve_env(m: &BTreeMap<String, Value>, cut: &Value, app: &Value) -> BTreeMap<String, String> {
    let secret = &m["Secret/shop-db"];
    let keys: BTreeSet<&str> = secret["stringData"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(s)
        .collect();
    let mut env = BTreeMap::new();
    for (c, prefix) in [(cut, ""), (app, "app:")] {
        for (name, e) in env_of(c) {
            let value = match e["valueFrom"]["secretKeyRef"].as_mapping() {
                Some(r) => {
                    let (sname, key) = (s(&r["name"]), s(&r["key"]));
                    assert_eq!(sname, "shop-db", "{name}: unknown Secret {sname}");
                    assert!(
                        keys.contains(key),
                        "{name}: Secret shop-db has no key {key}"
                    );
                    s(&secret["stringData"][key]).to_string()
                }
                None => s(&e["value"]).to_string(),
            };
            env.insert(format!("{prefix}{name}"), value);
        }
    }
    env
}

/// The ConfigMap file named by `--config`, loaded with the container's environment.
fn load_config(
    m: &BTreeMap<String, Value>,
    cut: &Value,
    env: &BTreeMap<String, String>,
    mounts: &BTreeMap<String, Value>,
    volumes: &BTreeMap<String, Value>,
) -> Config {
    let args: Vec<&str> = cut["args"].as_sequence().unwrap().iter().map(s).collect();
    assert_eq!(args[0], "serve");
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let (dir, file) = config_path.rsplit_once('/').unwrap();
    let volume = &volumes[s(&mounts[dir]["name"])];
    let cm = &m[&format!("ConfigMap/{}", s(&volume["configMap"]["name"]))];
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join(file), s(&cm["data"][file])).unwrap();
    let overrides = Overrides {
        source: env.get("CUTOVER_SOURCE").cloned(),
        destination: env.get("CUTOVER_DESTINATION").cloned(),
        admin_token: env.get("CUTOVER_ADMIN_TOKEN").cloned(),
        listen: env.get("CUTOVER_LISTEN").cloned(),
        admin_listen: env.get("CUTOVER_ADMIN_LISTEN").cloned(),
        coordination: cutover::config::CoordinationOverrides {
            backend: env.get("CUTOVER_COORDINATION_BACKEND").cloned(),
            endpoints: env.get("CUTOVER_COORDINATION_ENDPOINTS").cloned(),
            prefix: env.get("CUTOVER_COORDINATION_PREFIX").cloned(),
            member_id: env.get("CUTOVER_COORDINATION_MEMBER_ID").cloned(),
            ..Default::default()
        },
        ..Default::default()
    };
    Config::load(&tmp.path().join(file), &overrides)
        .unwrap_or_else(|e| panic!("ConfigMap cutover.toml: {e}"))
}

fn get_routes() -> BTreeSet<&'static str> {
    ROUTES
        .iter()
        .filter(|(_, m, _)| *m == "GET")
        .map(|(p, _, _)| *p)
        .collect()
}

#[test]
fn secrets_and_environment_are_what_cutover_reads() {
    let x = Example::load();
    assert_eq!(
        x.cut["restartPolicy"], "Always",
        "cutover runs as a native sidecar"
    );
    let known = env_vars_read();
    for name in x.env.keys().filter(|k| !k.starts_with("app:")) {
        assert!(
            name.starts_with("CUTOVER_") && known.contains(name),
            "cutover does not read {name}"
        );
    }
    let secret = &x.m["Secret/shop-db"];
    for k in secret["stringData"].as_mapping().unwrap().keys().map(s) {
        assert!(
            !k.starts_with("CUTOVER_") || known.contains(k),
            "Secret key {k} is no variable cutover reads"
        );
    }
    // cutover refuses a non-loopback admin API without a token: the pod provides one.
    assert!(
        cutover::control::is_loopback_addr(&x.cfg.admin_listen) || x.cfg.admin_token.is_some(),
        "admin_listen {} needs CUTOVER_ADMIN_TOKEN",
        x.cfg.admin_listen
    );
    // Without [[users]] the app logs in with the source URL's user and password.
    let dsn = url::Url::parse(&x.env["app:DATABASE_URL"]).unwrap();
    let source = cutover::config::BackendConfig::from_url(&x.env["CUTOVER_SOURCE"]).unwrap();
    assert_eq!(
        (dsn.username(), dsn.password().unwrap_or_default()),
        (source.user.as_str(), source.password.as_str())
    );
}

#[test]
fn ports_and_state_match_the_configmap() {
    let x = Example::load();
    // The app's DSN reaches cutover's listener on the pod's loopback.
    assert!(
        x.cfg.listen.starts_with("127.0.0.1:"),
        "the sidecar listens on loopback only"
    );
    let dsn = url::Url::parse(&x.env["app:DATABASE_URL"]).unwrap();
    assert_eq!(
        (dsn.host_str().unwrap(), u64::from(dsn.port().unwrap())),
        ("127.0.0.1", port_of(&x.cfg.listen)),
        "the app's DATABASE_URL must point at cutover"
    );
    assert_eq!(x.ports.get("admin"), Some(&port_of(&x.cfg.admin_listen)));
    // State on the PersistentVolumeClaim, one pod at a time.
    let (path, mount) = x
        .mounts
        .iter()
        .find(|(path, _)| x.cfg.state_file.starts_with(path))
        .expect("state_file is on a mounted volume");
    assert!(x.cfg.data_dir.starts_with(path));
    let claim = s(&x.volumes[s(&mount["name"])]["persistentVolumeClaim"]["claimName"]);
    assert!(
        x.m.contains_key(&format!("PersistentVolumeClaim/{claim}")),
        "no PVC {claim}"
    );
    let spec = &x.m["Deployment/shop"]["spec"];
    assert_eq!(spec["replicas"], 1, "a file state store: one pod at a time");
    assert_eq!(
        spec["strategy"]["type"], "Recreate",
        "old and new pod must not share the state file"
    );
}

#[test]
fn probes_shutdown_and_security_match_the_code() {
    let x = Example::load();
    let healthcheck = x.dockerfile.installed_as("deploy/docker/healthcheck.sh");
    // readiness = /health (the authoritative side); liveness/startup need no database.
    for (probe, want) in [
        ("readinessProbe", "/health"),
        ("livenessProbe", "/"),
        ("startupProbe", "/"),
    ] {
        let p = &x.cut[probe];
        let path = probe_path(p, &healthcheck);
        assert_eq!(path, want, "{probe}");
        assert!(
            get_routes().contains(path.as_str()),
            "{probe}: {path} is no GET route"
        );
        if let Some(port) = p["httpGet"]["port"].as_str() {
            assert!(
                x.ports.contains_key(port),
                "{probe}: no container port {port}"
            );
        }
    }
    // preStop sleep, then SIGTERM and shutdown_timeout_ms, inside the grace period.
    let pre_stop = x.cut["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .expect("preStop sleep");
    let grace = x.pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let drain = x.cfg.limits.shutdown_timeout_ms.div_ceil(1000);
    assert!(
        pre_stop + drain + 5 <= grace,
        "terminationGracePeriodSeconds {grace} < preStop {pre_stop} + shutdown_timeout {drain} + 5 s margin"
    );
    // The image's non-root uid; nothing writable but the volumes.
    let sc = &x.pod["securityContext"];
    assert_eq!(
        sc["runAsUser"].as_u64(),
        Some(u64::from(x.dockerfile.uid()))
    );
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(x.cut["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(x.cut["securityContext"]["allowPrivilegeEscalation"], false);
    let res = &x.cut["resources"];
    let mib = |v: &Value| -> u64 {
        s(v).strip_suffix("Mi")
            .expect("memory in Mi")
            .parse()
            .unwrap()
    };
    let (request, limit) = (
        mib(&res["requests"]["memory"]),
        mib(&res["limits"]["memory"]),
    );
    assert!(
        request >= 32 && limit >= 2 * request,
        "memory request {request}Mi, limit {limit}Mi"
    );
}

#[test]
fn prometheus_scrapes_the_admin_port_with_the_token() {
    let x = Example::load();
    let deploy = &x.m["Deployment/shop"];
    let svc = &x.m["Service/shop-cutover-admin"];
    let labels = deploy["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .unwrap();
    for (k, v) in svc["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(
            labels.get(k),
            Some(v),
            "Service selector {k:?} does not match the pod"
        );
    }
    let sp = &svc["spec"]["ports"][0];
    assert!(x.ports.contains_key(s(&sp["targetPort"])));
    let sm = &x.m["ServiceMonitor/shop-cutover"];
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(
            svc["metadata"]["labels"].get(k),
            Some(v),
            "ServiceMonitor selector {k:?}"
        );
    }
    let ep = &sm["spec"]["endpoints"][0];
    assert_eq!(ep["port"], sp["name"]);
    assert!(get_routes().contains(s(&ep["path"])) && ep["path"] == "/metrics");
    let cred = &ep["authorization"]["credentials"];
    assert_eq!(s(&cred["name"]), "shop-db");
    assert_eq!(s(&cred["key"]), "CUTOVER_ADMIN_TOKEN");
    let ann = deploy["spec"]["template"]["metadata"]["annotations"]
        .as_mapping()
        .unwrap();
    let port = port_of(&x.cfg.admin_listen).to_string();
    assert_eq!(
        ann.get("prometheus.io/port").and_then(|v| v.as_str()),
        Some(port.as_str())
    );
    assert_eq!(
        ann.get("prometheus.io/path").and_then(|v| v.as_str()),
        Some("/metrics")
    );
}
