//! The local control channel between the CLI and the running agent: a Unix
//! socket in the data dir (`control.sock`, owner-only), one JSON request
//! per line and one JSON response per line. Requests carry the protocol
//! version (`"v": 1`); an agent answers a request of a version it does not
//! speak with an error naming the versions it does, so an old CLI and a new
//! agent (or the reverse, after a fleet rollback) fail clearly. The later
//! HTTP API serves the same operations.
//!
//! Operations today: `status`, `extensions`, `route` (the routing
//! override, read or set with `arg`). Later: `sync status`...

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
    /// The operation's argument, where it takes one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub arg: Option<String>,
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
    /// Extensions and where each is registered.
    fn extensions(&self) -> serde_json::Value;
    /// The routing override: set it (`open`, `closed`, `auto`) if given,
    /// and say what it is and whether the business is open now.
    fn route(&self, set: Option<crate::routing::Override>) -> serde_json::Value;
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
        "extensions" => Response {
            v: VERSION,
            ok: true,
            error: None,
            result: Some(ops.extensions()),
        },
        "route" => match req.arg.as_deref().map(str::parse).transpose() {
            Ok(set) => Response {
                v: VERSION,
                ok: true,
                error: None,
                result: Some(ops.route(set)),
            },
            Err(e) => err(format!("route: {e}")),
        },
        other => err(format!("unknown operation {other:?}")),
    }
}

/// At most this many CLI connections are served at once; more wait in the
/// kernel's backlog.
const MAX_CONNECTIONS: usize = 8;

/// Bind the control socket at `path`, owner-only, before the agent says it
/// is ready (so a CLI started right after "ready" finds it). The caller
/// holds the data dir's lock, so a socket file already there is a killed
/// agent's and is replaced.
pub fn bind(path: &Path) -> Result<ControlSocket, crate::Error> {
    let at = |e: std::io::Error| {
        crate::Error::DataDir(format!("control socket {}: {e}", path.display()))
    };
    // Bound under a temporary name, made owner-only, then renamed into
    // place, so the well-known path never exists with a looser mode. A
    // client that raced into the temporary name is still refused by the
    // peer-credential check in `serve`.
    let tmp = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(at)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(at)?;
    }
    // rename replaces a stale socket file atomically.
    // Who we are, for the peer check: the owner of the socket we just
    // made (the effective uid, without a libc call; /proc/self would say
    // root for a binary with file capabilities).
    let owner = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&tmp).map_err(at)?.uid()
    };
    std::fs::rename(&tmp, path).map_err(at)?;
    listener.set_nonblocking(true).map_err(at)?;
    Ok(ControlSocket {
        listener: tokio::net::UnixListener::from_std(listener).map_err(at)?,
        owner,
    })
}

/// The bound control socket and the uid it answers (and root).
pub struct ControlSocket {
    listener: tokio::net::UnixListener,
    owner: u32,
}

/// Serve the control socket until the task is dropped. Only the agent's
/// own user (or root) is answered.
pub async fn serve(socket: ControlSocket, ops: Arc<dyn Operations>) {
    let ControlSocket {
        listener,
        owner: me,
    } = socket;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(c) if c.uid() == me || c.uid() == 0 => {}
            _ => continue,
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let ops = ops.clone();
        tokio::spawn(async move {
            let _slot = slot;
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
    request_with(data_dir, op, None)
}

/// [`request`] with an argument.
pub fn request_with(
    data_dir: &Path,
    op: &str,
    arg: Option<&str>,
) -> Result<serde_json::Value, crate::Error> {
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
        arg: arg.map(str::to_string),
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
        fn extensions(&self) -> serde_json::Value {
            serde_json::json!([])
        }
        fn route(&self, set: Option<crate::routing::Override>) -> serde_json::Value {
            serde_json::json!({"override": set.unwrap_or_default().as_str()})
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
        let set = answer(&Fixed, r#"{"v":1,"op":"route","arg":"closed"}"#);
        assert_eq!(set.result.unwrap()["override"], "closed");
        let bad = answer(&Fixed, r#"{"v":1,"op":"route","arg":"shut"}"#);
        assert!(
            !bad.ok
                && bad
                    .error
                    .unwrap()
                    .contains("\"shut\" is not open, closed or auto")
        );
    }
}
