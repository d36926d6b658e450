//! Connecting to the agent (its unix socket, or a remote one: [`crate::remote`]), and turning gRPC errors into the
//! messages and exit codes Docker users expect.

use anyhow::Result;
use hyper_util::rt::TokioIo;
use skiff_proto::engine::engine_client::EngineClient;
use std::path::PathBuf;
use tonic::transport::{Channel, Endpoint, Uri};

/// An error that ends the CLI with a specific exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

pub fn exit(code: i32, message: impl Into<String>) -> anyhow::Error {
    Exit {
        code,
        message: message.into(),
    }
    .into()
}

/// Converts a gRPC status into an [`Exit`] (125 unless the agent said otherwise).
pub fn status(s: tonic::Status) -> anyhow::Error {
    let code = s
        .metadata()
        .get("skiff-exit-code")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(125);
    exit(code, format!("Error response from agent: {}", s.message()))
}

pub async fn connect(host: &str) -> Result<EngineClient<Channel>> {
    Ok(EngineClient::new(channel(host).await?).max_decoding_message_size(64 << 20))
}

/// Where `tcp://` hosts find their TLS files: set once by `main` from `--tlsdir`, the
/// context or the default, so commands keep passing only the host string around.
static TLS_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

pub fn set_tls_dir(dir: PathBuf) {
    let _ = TLS_DIR.set(dir);
}

/// A gRPC channel to the agent at `host` (any of its services): `unix://`, `ssh://`
/// or `tcp://` (mutual TLS; see [`crate::remote`]).
pub async fn channel(host: &str) -> Result<Channel> {
    let path = match host.strip_prefix("unix://") {
        Some(p) => PathBuf::from(p),
        None if host.starts_with("ssh://") => return crate::remote::ssh_channel(host).await,
        None if host.starts_with("tcp://") => {
            let dir = TLS_DIR
                .get()
                .cloned()
                .unwrap_or_else(crate::context::default_tls_dir);
            return crate::remote::tls_channel(host, &dir).await;
        }
        None => {
            return Err(exit(
                125,
                format!("unsupported --host {host:?}: use unix:///PATH, ssh://[USER@]HOST[:PORT] or tcp://HOST[:PORT]"),
            ));
        }
    };
    let p2 = path.clone();
    Endpoint::try_from("http://skiff.local")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p2.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
        }))
        .await
        .map_err(|e| {
            // The socket is root's (0660): say so rather than suggest the agent is down.
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(s) = src {
                if s.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
                {
                    return exit(
                        125,
                        format!(
                            "permission denied while trying to connect to the Skiff agent at unix://{}: the socket belongs to root (and its group)",
                            path.display()
                        ),
                    );
                }
                src = s.source();
            }
            exit(
                125,
                format!(
                    "Cannot connect to the Skiff agent at unix://{}. Is the agent running? Start it with `skiff agent` (as root), or point --host / SKIFF_HOST at its socket.",
                    path.display()
                ),
            )
        })
}
