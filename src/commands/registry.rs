//! Registry commands: pull, push, login, logout. Credentials live in the client's
//! credential file (`~/.skiff/config.json`, 0600) and are sent to the agent only for
//! the registry of the image at hand.

use crate::client::{exit, status};
use anyhow::{Context, Result};
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use skiff_proto::engine::engine_client::EngineClient;
use skiff_proto::engine::*;
use skiff_runtime::image::auth::{CredentialFile, Credentials};
use skiff_runtime::image::Reference;
use std::collections::HashMap;
use std::io::IsTerminal;
use tonic::transport::Channel;

type Client = EngineClient<Channel>;

#[derive(Args, Debug)]
pub struct PullArgs {
    /// NAME[:TAG|@DIGEST]
    pub image: String,
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// NAME[:TAG]
    pub image: String,
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Registry (default: Docker Hub).
    pub server: Option<String>,
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Read the password from stdin.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    pub server: Option<String>,
}

fn credentials_for(domain: &str) -> Result<Option<Credentials>> {
    Ok(CredentialFile::new(CredentialFile::default_path()).get(domain)?)
}

/// Renders progress: one bar per layer on a terminal, one line per status change otherwise.
pub struct ProgressView {
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    last: HashMap<String, String>,
    quiet: bool,
}

impl ProgressView {
    pub fn new(quiet: bool) -> Self {
        let multi = (!quiet && std::io::stdout().is_terminal()).then(MultiProgress::new);
        Self {
            multi,
            bars: HashMap::new(),
            last: HashMap::new(),
            quiet,
        }
    }

    pub fn update(&mut self, m: &ProgressMessage) {
        if self.quiet {
            return;
        }
        if m.id.is_empty() {
            if !m.status.is_empty() {
                match &self.multi {
                    Some(mp) => {
                        let _ = mp.println(&m.status);
                    }
                    None => println!("{}", m.status),
                }
            }
            return;
        }
        match &self.multi {
            Some(mp) => {
                let bar = self.bars.entry(m.id.clone()).or_insert_with(|| {
                    let b = mp.add(ProgressBar::new(m.total.max(1)));
                    b.set_style(
                        ProgressStyle::with_template(
                            "{prefix}: {msg:<18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    b.set_prefix(m.id.clone());
                    b
                });
                if m.total > 0 {
                    bar.set_length(m.total);
                    bar.set_position(m.current);
                }
                bar.set_message(m.status.clone());
                if matches!(
                    m.status.as_str(),
                    "Pull complete" | "Already exists" | "Pushed" | "Layer already exists"
                ) {
                    bar.finish();
                }
            }
            None => {
                if self.last.get(&m.id) != Some(&m.status) {
                    self.last.insert(m.id.clone(), m.status.clone());
                    println!("{}: {}", m.id, m.status);
                }
            }
        }
    }
}

pub async fn pull(c: &mut Client, a: &PullArgs) -> Result<i32> {
    let r = Reference::parse(&a.image).map_err(|e| exit(125, e.to_string()))?;
    let creds = credentials_for(&r.domain)?;
    if r.digest.is_none() && !a.image.contains(':') && !a.quiet {
        println!("Using default tag: latest");
    }
    let req = PullRequest {
        reference: r.to_string(),
        username: creds
            .as_ref()
            .map(|c| c.username.clone())
            .unwrap_or_default(),
        password: creds.map(|c| c.password).unwrap_or_default(),
    };
    let mut s = c.image_pull(req).await.map_err(status)?.into_inner();
    let mut view = ProgressView::new(a.quiet);
    while let Some(m) = s.message().await.map_err(status)? {
        view.update(&m);
    }
    if a.quiet {
        println!(
            "{}",
            r.full_name() + &r.tag.map(|t| format!(":{t}")).unwrap_or_default()
        );
    } else {
        println!(
            "{}",
            r.full_name()
                + &r.tag
                    .map(|t| format!(":{t}"))
                    .or(r.digest.map(|d| format!("@{d}")))
                    .unwrap_or_default()
        );
    }
    Ok(0)
}

pub async fn push(c: &mut Client, a: &PushArgs) -> Result<i32> {
    let r = Reference::parse(&a.image).map_err(|e| exit(125, e.to_string()))?;
    let creds = credentials_for(&r.domain)?;
    let req = PushRequest {
        reference: r.to_string(),
        username: creds
            .as_ref()
            .map(|c| c.username.clone())
            .unwrap_or_default(),
        password: creds.map(|c| c.password).unwrap_or_default(),
    };
    let mut s = c.image_push(req).await.map_err(status)?.into_inner();
    let mut view = ProgressView::new(a.quiet);
    while let Some(m) = s.message().await.map_err(status)? {
        view.update(&m);
    }
    Ok(0)
}

fn server_name(s: &Option<String>) -> String {
    s.clone().unwrap_or_else(|| "docker.io".into())
}

pub async fn login(c: &mut Client, a: &LoginArgs) -> Result<i32> {
    let server = server_name(&a.server);
    let username = match &a.username {
        Some(u) => u.clone(),
        None => {
            eprint!("Username: ");
            let mut u = String::new();
            std::io::stdin()
                .read_line(&mut u)
                .context("reading username")?;
            u.trim().to_string()
        }
    };
    let password = if a.password_stdin {
        if a.password.is_some() {
            return Err(exit(
                1,
                "--password and --password-stdin are mutually exclusive",
            ));
        }
        let mut p = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut p)
            .context("reading password from stdin")?;
        p.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = &a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else {
        return Err(exit(1, "no password given: use --password-stdin"));
    };
    if username.is_empty() {
        return Err(exit(
            1,
            "Error: Cannot perform an interactive login from a non TTY device",
        ));
    }
    let resp = c
        .registry_login(LoginRequest {
            server: server.clone(),
            username: username.clone(),
            password: password.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let file = CredentialFile::new(CredentialFile::default_path());
    file.store(&server, &Credentials { username, password })?;
    eprintln!(
        "WARNING! Your password will be stored unencrypted in {}.",
        file.path().display()
    );
    println!("{}", resp.status);
    Ok(0)
}

pub async fn logout(a: &LogoutArgs) -> Result<i32> {
    let server = server_name(&a.server);
    let file = CredentialFile::new(CredentialFile::default_path());
    if file.remove(&server)? {
        println!(
            "Removing login credentials for {}",
            skiff_runtime::image::auth::credential_key(&server)
        );
    } else {
        println!("Not logged in to {server}");
    }
    Ok(0)
}

/// All stored credentials as host → base64(user:pass), for build base-image pulls.
pub fn all_auths() -> HashMap<String, String> {
    let path = CredentialFile::default_path();
    let raw = std::fs::read(&path).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap_or_default();
    v.get("auths")
        .and_then(|a| a.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, e)| {
                    e.get("auth")
                        .and_then(|x| x.as_str())
                        .map(|s| (k.clone(), s.to_string()))
                })
                .collect()
        })
        .unwrap_or_default()
}
