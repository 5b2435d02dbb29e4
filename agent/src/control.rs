//! The local control channel between the CLI and the running agent: a Unix
//! socket in the data dir (`control.sock`, owner-only), one JSON request
//! per line and one JSON response per line. Requests carry the protocol
//! version (`"v": 1`); an agent answers a request of a version it does not
//! speak with an error naming the versions it does, so an old CLI and a new
//! agent (or the reverse, after a fleet rollback) fail clearly. The later
//! HTTP API serves the same operations.
//!
//! Operations today: `status`. Later: `route override`, `sync status`...

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

pub const VERSION: u32 = 1;
pub const SOCKET: &str = "control.sock";
/// A request line longer than this is refused (the socket is owner-only,
/// but a bound is a bound).
const MAX_REQUEST: usize = 16 * 1024;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Request {
    pub v: u32,
    pub op: String,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub v: u32,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub result: Option<serde_json::Value>,
}

/// What the running agent answers with.
pub trait Operations: Send + Sync + 'static {
    fn status(&self) -> serde_json::Value;
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET)
}

fn answer(ops: &dyn Operations, line: &str) -> Response {
    let err = |e: String| Response {
        v: VERSION,
        ok: false,
        error: Some(e),
        result: None,
    };
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return err(format!("not a control request: {e}")),
    };
    if req.v != VERSION {
        return err(format!(
            "control protocol version {} is not spoken here (this agent speaks {VERSION})",
            req.v
        ));
    }
    match req.op.as_str() {
        "status" => Response {
            v: VERSION,
            ok: true,
            error: None,
            result: Some(ops.status()),
        },
        other => err(format!("unknown operation {other:?}")),
    }
}

/// Listen on `path` until the task is dropped. A stale socket file from a
/// killed agent is replaced; a live one (another agent on this data dir)
/// is an error.
pub async fn serve(path: PathBuf, ops: Arc<dyn Operations>) -> Result<(), crate::Error> {
    if path.exists() {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            return Err(crate::Error::DataDir(format!(
                "another agent is running on this data dir (its control socket {} answers)",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(&path);
    }
    // Owner-only from the start: bind under a restrictive umask-free path
    // by fixing the mode right after bind, before accepting anything.
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| crate::Error::DataDir(format!("control socket {}: {e}", path.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
            crate::Error::DataDir(format!("control socket {}: {e}", path.display()))
        })?;
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let ops = ops.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut lines = BufReader::new(r.take(MAX_REQUEST as u64 * 8)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let resp = if line.len() > MAX_REQUEST {
                    Response {
                        v: VERSION,
                        ok: false,
                        error: Some("request too large".into()),
                        result: None,
                    }
                } else {
                    answer(ops.as_ref(), &line)
                };
                let mut out = serde_json::to_string(&resp).unwrap_or_default();
                out.push('\n');
                if w.write_all(out.as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// The CLI's side: one request, one response, with a clear error when no
/// agent is running.
pub fn request(data_dir: &Path, op: &str) -> Result<serde_json::Value, crate::Error> {
    use std::io::{BufRead, Write};
    let path = socket_path(data_dir);
    let mut s = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        crate::Error::Io(format!(
            "no agent is running on {} (cannot reach {}: {e}); start it with `handlet run`",
            data_dir.display(),
            path.display()
        ))
    })?;
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let req = serde_json::to_string(&Request {
        v: VERSION,
        op: op.into(),
    })
    .map_err(|e| crate::Error::Io(e.to_string()))?;
    s.write_all(format!("{req}\n").as_bytes())
        .map_err(|e| crate::Error::Io(format!("control socket: {e}")))?;
    let mut line = String::new();
    std::io::BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| crate::Error::Io(format!("the agent did not answer: {e}")))?;
    let resp: Response = serde_json::from_str(&line)
        .map_err(|e| crate::Error::Io(format!("the agent's answer is not understood: {e}")))?;
    if !resp.ok {
        return Err(crate::Error::Io(format!(
            "the agent refused: {}",
            resp.error.unwrap_or_default()
        )));
    }
    Ok(resp.result.unwrap_or(serde_json::Value::Null))
}

/// An answer as the CLI prints it.
pub fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Operations for Fixed {
        fn status(&self) -> serde_json::Value {
            serde_json::json!({"calls": 2})
        }
    }

    #[test]
    fn requests_are_versioned_and_checked() {
        let ok = answer(&Fixed, r#"{"v":1,"op":"status"}"#);
        assert!(ok.ok);
        assert_eq!(ok.result.unwrap()["calls"], 2);
        let old = answer(&Fixed, r#"{"v":7,"op":"status"}"#);
        assert!(!old.ok && old.error.unwrap().contains("version 7"));
        let unknown = answer(&Fixed, r#"{"v":1,"op":"reboot"}"#);
        assert!(!unknown.ok && unknown.error.unwrap().contains("reboot"));
        let junk = answer(&Fixed, "café ☕ {");
        assert!(!junk.ok);
    }
}
