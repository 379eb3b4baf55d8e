//! A real S3-compatible server (moto) on loopback for the tests, and boto3 as the second
//! client that reads back what sluice wrote. Both come from the venv `test.sh` installs;
//! a missing venv fails the test (never skips it).
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::repo_root;

pub fn venv_bin(name: &str) -> PathBuf {
    let path = repo_root().join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run ./test.sh, which installs the test tools into .venv",
        path.display()
    );
    path
}

pub struct Moto {
    pub child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        Self::start_with(&[])
    }

    /// With moto settings from the environment, e.g. INITIAL_NO_AUTH_ACTION_COUNT=0 to
    /// check every request's credentials.
    pub fn start_with(env: &[(&str, &str)]) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(venv_bin("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a client needs for this server (dummy credentials).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing-key-id".into()),
            (
                "AWS_SECRET_ACCESS_KEY",
                "testing-secret-never-printed".into(),
            ),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    /// Run a Python snippet with boto3's `s3` client bound to this server; its stdout.
    pub fn boto(&self, code: &str) -> String {
        let script = format!(
            "import boto3, io, json, sys\ns3 = boto3.client('s3', endpoint_url='{}', aws_access_key_id='k', aws_secret_access_key='s', region_name='us-east-1')\n{code}\n",
            self.endpoint()
        );
        let out = super::python::python(&script);
        assert!(
            out.status.success(),
            "boto3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn bucket(&self, name: &str) {
        self.boto(&format!("s3.create_bucket(Bucket='{name}')"));
    }

    pub fn put(&self, bucket: &str, key: &str, body: &str) {
        self.boto(&format!(
            "s3.put_object(Bucket='{bucket}', Key='{key}', Body={body:?}.encode())"
        ));
    }

    /// Keys under a prefix, sorted, one per line.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let out = self.boto(&format!(
            "r = s3.list_objects_v2(Bucket='{bucket}', Prefix='{prefix}')\nprint('\\n'.join(sorted(o['Key'] for o in r.get('Contents', []))))"
        ));
        out.lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    }

    pub fn get(&self, bucket: &str, key: &str) -> String {
        self.boto(&format!(
            "sys.stdout.write(s3.get_object(Bucket='{bucket}', Key='{key}')['Body'].read().decode())"
        ))
    }

    /// Pause (SIGSTOP) or resume (SIGCONT) the server process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
