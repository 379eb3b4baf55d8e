//! A sluice cluster on loopback for tests: a scheduler and executors started from the
//! binary, each logging to a file the test can read.

use super::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Node {
    child: Child,
    log: PathBuf,
}

impl Node {
    fn start(project: &Path, args: &[String], env: &[(&str, String)], log: PathBuf) -> Node {
        let file = std::fs::File::create(&log).unwrap();
        let child = sluice()
            .arg("--project")
            .arg(project)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("sluice starts");
        Node { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_for(&self, text: &str) {
        let start = Instant::now();
        while !self.log().contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "`{text}` not logged within 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Cluster {
    pub url: String,
    pub scheduler: Node,
    pub executors: Vec<Node>,
    env: Vec<(&'static str, String)>,
    _logs: tempfile::TempDir,
}

impl Cluster {
    /// A scheduler and `executors` executors for `project`, each with `env` set.
    pub fn start(project: &Path, executors: usize, env: &[(&'static str, String)]) -> Cluster {
        let logs = tempfile::tempdir().unwrap();
        let port = free_port();
        let scheduler = Node::start(
            project,
            &[
                "cluster".into(),
                "scheduler".into(),
                "--bind".into(),
                format!("127.0.0.1:{port}"),
            ],
            env,
            logs.path().join("scheduler.log"),
        );
        scheduler.wait_for("listening on");
        let executors = (0..executors)
            .map(|i| {
                let node = Node::start(
                    project,
                    &[
                        "cluster".into(),
                        "executor".into(),
                        "--scheduler".into(),
                        format!("127.0.0.1:{port}"),
                        "--bind".into(),
                        format!("127.0.0.1:{}", free_port()),
                        "--grpc-port".into(),
                        free_port().to_string(),
                        "--slots".into(),
                        "2".into(),
                    ],
                    env,
                    logs.path().join(format!("executor{i}.log")),
                );
                node.wait_for("Executor registration succeed");
                node
            })
            .collect();
        Cluster {
            url: format!("df://127.0.0.1:{port}"),
            scheduler,
            executors,
            env: env.to_vec(),
            _logs: logs,
        }
    }

    /// sluice with `args` against this cluster's project, with the nodes' environment.
    pub fn sluice(&self, project: &Path, args: &[&str]) -> Run {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_env(project, args, &env)
    }

    /// A query on the cluster, as CSV.
    pub fn query(&self, project: &Path, sql: &str) -> String {
        let r = self.sluice(
            project,
            &[
                "shell",
                "--cluster",
                &self.url,
                "--format",
                "csv",
                "-c",
                sql,
            ],
        );
        assert_eq!(r.code, 0, "cluster query failed: {sql}\n{}", r.stderr);
        r.stdout
    }
}
