//! Python scripts run in the test venv. Every script leaves through `os._exit` once its
//! output is flushed: pyarrow 25/26 aborts in its exit-time destructors in a fifth to two
//! fifths of runs here when boto3 is imported, which would fail a test at random.

use std::process::{Command, Output};

use super::s3::venv_bin;

/// Run `script` with the venv's Python; its exit status and output.
pub fn python(script: &str) -> Output {
    let script = format!(
        "{script}\nimport os as _os, sys as _sys\n_sys.stdout.flush()\n_sys.stderr.flush()\n_os._exit(0)\n"
    );
    Command::new(venv_bin("python"))
        .arg("-c")
        .arg(script)
        .output()
        .expect("the venv's python runs")
}
