//! `deploy/Dockerfile`: no container engine runs here, so the file is parsed
//! and checked against the code (binary path, non-root user, ports, health
//! check, configuration, every file the build needs), and linted by hadolint.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use cutover::config::{Config, Overrides};
use cutover::control::admin::ROUTES;

use crate::support::binary::repo_path;
use crate::{env_vars_read, read, run, tool};

/// One instruction, with its stage.
#[derive(Debug, Clone)]
pub struct Instruction {
    pub stage: String,
    pub cmd: String,
    pub args: String,
}

/// The parsed Dockerfile.
pub struct Dockerfile {
    pub instructions: Vec<Instruction>,
}

impl Dockerfile {
    pub fn load() -> Dockerfile {
        Dockerfile::parse(&read("deploy/Dockerfile"))
    }

    /// Joins `\` continuations, drops comments, splits `CMD args`; tracks
    /// the stage (`FROM … AS name`).
    pub fn parse(text: &str) -> Dockerfile {
        let mut logical = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
                continue;
            }
            if let Some(body) = t.strip_suffix('\\') {
                current.push_str(body);
                current.push(' ');
            } else {
                current.push_str(t);
                logical.push(std::mem::take(&mut current));
            }
        }
        let mut stage = String::from("(global)");
        let mut instructions = Vec::new();
        for l in logical.into_iter().filter(|l| !l.trim().is_empty()) {
            let (cmd, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
            let cmd = cmd.to_ascii_uppercase();
            let args = args.split_whitespace().collect::<Vec<_>>().join(" ");
            if cmd == "FROM" {
                stage = match args.split_once(" AS ") {
                    Some((_, name)) => name.trim().to_string(),
                    None => args.clone(),
                };
            }
            instructions.push(Instruction {
                stage: stage.clone(),
                cmd,
                args,
            });
        }
        Dockerfile { instructions }
    }

    pub fn stages(&self) -> Vec<String> {
        let mut s: Vec<String> = Vec::new();
        for i in self.instructions.iter().filter(|i| i.cmd == "FROM") {
            s.push(i.stage.clone());
        }
        s
    }

    /// The instructions of `stage`.
    pub fn stage(&self, stage: &str) -> Vec<&Instruction> {
        self.instructions
            .iter()
            .filter(|i| i.stage == stage)
            .collect()
    }

    /// The final stage's instructions named `cmd`.
    pub fn last(&self, cmd: &str) -> Vec<String> {
        let stages = self.stages();
        let final_stage = stages.last().expect("a FROM");
        self.stage(final_stage)
            .into_iter()
            .filter(|i| i.cmd == cmd)
            .map(|i| i.args.clone())
            .collect()
    }

    /// The single value of a final-stage instruction.
    pub fn one(&self, cmd: &str) -> String {
        let v = self.last(cmd);
        assert_eq!(v.len(), 1, "expected one {cmd} in the final stage: {v:?}");
        v[0].clone()
    }

    /// Final-stage `COPY [--flags] SRC DEST` as (from-stage or None, src, dest).
    pub fn copies(&self) -> Vec<(Option<String>, String, String)> {
        self.last("COPY")
            .into_iter()
            .map(|a| {
                let words: Vec<&str> = a.split(' ').collect();
                let from = words
                    .iter()
                    .find_map(|w| w.strip_prefix("--from="))
                    .map(str::to_string);
                let rest: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
                assert_eq!(rest.len(), 2, "COPY {a}: one source and one destination");
                (from, rest[0].to_string(), rest[1].to_string())
            })
            .collect()
    }

    /// Where the final image has the repository file `src` (`COPY src dest`).
    pub fn installed_as(&self, src: &str) -> String {
        self.copies()
            .into_iter()
            .find(|(from, s, _)| from.is_none() && s == src)
            .map(|(_, _, d)| d)
            .unwrap_or_else(|| panic!("the image does not COPY {src}"))
    }

    /// `ENV` of the final stage, as (name, value).
    pub fn env(&self) -> Vec<(String, String)> {
        self.last("ENV")
            .iter()
            .flat_map(|a| {
                a.split(' ')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The numeric uid of `USER uid:gid`.
    pub fn uid(&self) -> u32 {
        let user = self.one("USER");
        let uid = user.split(':').next().unwrap();
        uid.parse().unwrap_or_else(|_| {
            panic!("USER {user}: use a numeric uid (Kubernetes runAsNonRoot checks it)")
        })
    }
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec (JSON) form: {args} ({e})"))
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

/// The configuration file baked into the image, loaded as the image runs it
/// (backends from the environment).
pub fn image_config(d: &Dockerfile) -> Config {
    let overrides = Overrides {
        source: Some("mysql://app:pw@db1:3306/shop".into()),
        destination: Some("mysql://app:pw@db2:3306/shop".into()),
        admin_token: Some("t".into()),
        ..Default::default()
    };
    let path = repo_path("deploy/docker/cutover.toml");
    assert_eq!(
        d.env()
            .iter()
            .find(|(k, _)| k == "CUTOVER_CONFIG")
            .map(|(_, v)| v.clone()),
        Some(d.installed_as("deploy/docker/cutover.toml")),
        "CUTOVER_CONFIG must name the copied config file"
    );
    Config::load(&path, &overrides).unwrap_or_else(|e| panic!("image config: {e}"))
}

#[test]
fn dockerfile_agrees_with_the_code() {
    let d = Dockerfile::load();
    let stages = d.stages();
    assert_eq!(
        stages.len(),
        2,
        "multi-stage: build, then a small runtime: {stages:?}"
    );
    let runtime_from = &d
        .instructions
        .iter()
        .filter(|i| i.cmd == "FROM")
        .nth(1)
        .unwrap()
        .args;
    assert!(
        runtime_from.contains("-slim") || runtime_from.contains("distroless"),
        "small runtime image: {runtime_from}"
    );

    // The binary: built in the first stage, copied to where ENTRYPOINT runs it.
    let entry = exec_form(&d.one("ENTRYPOINT"));
    let (_, built, dest) = d
        .copies()
        .into_iter()
        .find(|(from, _, _)| from.as_deref() == Some(stages[0].as_str()))
        .expect("COPY --from=<build stage>");
    assert_eq!(
        entry[0], dest,
        "ENTRYPOINT runs what the build stage produced"
    );
    let build_runs: Vec<&Instruction> = d
        .stage(&stages[0])
        .into_iter()
        .filter(|i| i.cmd == "RUN")
        .collect();
    assert!(
        build_runs.iter().any(|r| r.args.contains("--bin cutover")
            && r.args.contains("--locked")
            && r.args.contains(&format!("target/release/cutover {built}"))),
        "the build stage must build --bin cutover and put it at {built}"
    );
    assert_eq!(exec_form(&d.one("CMD")), ["serve"]);

    // Non-root, numeric, created with that uid, owning the state volume.
    let uid = d.uid();
    assert_ne!(uid, 0, "the image must not run as root");
    let runs = d.last("RUN").join(" ");
    assert!(
        runs.contains(&format!("--uid {uid}")),
        "no user with uid {uid} is created"
    );
    let volume = exec_form(&d.one("VOLUME"));
    assert_eq!(volume.len(), 1);
    let state_dir = &volume[0];
    assert!(
        runs.contains(&format!("-o cutover -g cutover -m 0750 {state_dir}")),
        "{state_dir} must belong to the user"
    );
    assert_eq!(&d.one("WORKDIR"), state_dir);

    // Ports: EXPOSE = the image config's listeners = the code's default ports.
    let cfg = image_config(&d);
    let exposed: BTreeSet<u16> = d
        .one("EXPOSE")
        .split(' ')
        .map(|p| p.parse().unwrap())
        .collect();
    let configured = BTreeSet::from([port_of(&cfg.listen), port_of(&cfg.admin_listen)]);
    assert_eq!(exposed, configured, "EXPOSE vs deploy/docker/cutover.toml");
    let defaults =
        Config::parse("[source]\nurl='mysql://a@h/d'\n[destination]\nurl='mysql://a@h/d'\n")
            .unwrap();
    assert_eq!(
        configured,
        BTreeSet::from([port_of(&defaults.listen), port_of(&defaults.admin_listen)]),
        "the image uses the code's default ports"
    );
    assert!(
        cfg.state_file.starts_with(state_dir) && cfg.data_dir.starts_with(state_dir),
        "state outside the volume"
    );

    // HEALTHCHECK: the copied script on a GET route, on the admin port it assumes.
    let hc = d.one("HEALTHCHECK");
    let cmd = exec_form(hc.split_once("CMD ").expect("HEALTHCHECK … CMD [...]").1);
    assert_eq!(cmd[0], d.installed_as("deploy/docker/healthcheck.sh"));
    assert!(
        ROUTES.iter().any(|(p, m, _)| *p == cmd[1] && *m == "GET"),
        "{} is no GET route",
        cmd[1]
    );
    assert_eq!(cmd[1], "/health");
    let script = read("deploy/docker/healthcheck.sh");
    assert!(
        script.contains(&format!("0.0.0.0:{}", port_of(&cfg.admin_listen))),
        "script's default admin port"
    );
    assert!(
        hc.contains("--interval=") && hc.contains("--timeout=") && hc.contains("--start-period=")
    );
    assert_eq!(d.one("STOPSIGNAL"), "SIGTERM", "cutover drains on SIGTERM");

    // Environment: only variables the binary reads.
    let known = env_vars_read();
    for (k, _) in d.env() {
        if k.starts_with("CUTOVER_") {
            assert!(
                known.contains(&k),
                "the image sets {k}, which cutover does not read"
            );
        }
    }
}

#[test]
fn the_image_build_copies_everything_the_crate_needs() {
    let d = Dockerfile::load();
    let stages = d.stages();
    let copied: Vec<String> = d
        .stage(&stages[0])
        .into_iter()
        .filter(|i| i.cmd == "COPY")
        .flat_map(|i| {
            let words: Vec<&str> = i.args.split(' ').filter(|w| !w.starts_with("--")).collect();
            words[..words.len() - 1]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for c in &copied {
        assert!(
            repo_path(c).exists(),
            "COPY {c}: no such file in the build context"
        );
    }
    let inside = |rel: &Path| copied.iter().any(|c| rel.starts_with(c));
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "src/main.rs",
        "benches/hot_path.rs",
    ] {
        assert!(
            inside(Path::new(needed)),
            "the build stage does not COPY {needed}"
        );
    }
    // Every include_str!/include_bytes! of the crate resolves inside what is copied.
    let root = repo_path("");
    let mut files = vec![repo_path("src")];
    let mut includes = 0;
    while let Some(p) = files.pop() {
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if p.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for marker in ["include_str!(\"", "include_bytes!(\""] {
            for rest in text.split(marker).skip(1) {
                let rel = rest.split('"').next().unwrap();
                let target: PathBuf = p.parent().unwrap().join(rel).canonicalize().unwrap();
                let target = target.strip_prefix(&root).unwrap().to_path_buf();
                assert!(
                    inside(&target),
                    "{} includes {}, which the image build does not COPY",
                    p.display(),
                    target.display()
                );
                includes += 1;
            }
        }
    }
    assert!(includes >= 4, "found only {includes} include_str! uses");
    let ignore = read(".dockerignore");
    for c in &copied {
        assert!(
            !ignore.lines().any(|l| l.trim_end_matches('/') == c),
            ".dockerignore hides {c}"
        );
    }
    assert!(
        ignore.lines().any(|l| l == "target/"),
        ".dockerignore must keep target/ out of the context"
    );
}

#[test]
fn dockerfile_passes_hadolint() {
    let out = run(Command::new(tool("hadolint")).arg(repo_path("deploy/Dockerfile")));
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
