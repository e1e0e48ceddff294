//! Reaching an SSH host as `ssh` would: the host's settings from the SSH configuration, the host
//! key checked against known_hosts, and a login with ssh-agent's keys or the identity files
//! (asking for a passphrase where one is needed and can be asked).
//!
//! The configuration is read by OpenSSH itself (`ssh -G`, which prints what `ssh` would use for
//! a host without connecting), so `Host` patterns, `Match`, `Include`, tokens and defaults mean
//! exactly what they mean to `ssh`. Without an `ssh` program the URL is taken as written.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use russh::client;
use russh::keys::agent::client::AgentClient;
use russh::keys::agent::AgentIdentity;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::Version;

use super::super::common::io_error;
use super::super::Options;
use super::{sftp_error, CHUNK, MAX_CHUNK};

/// Where and as whom to log in, once the SSH configuration was applied to the URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Target {
    /// The name the URL gave (a `Host` alias, perhaps), for messages.
    pub alias: String,
    /// The host to connect to and the name its key is listed under.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Identity files to try, in order (those that exist).
    pub identities: Vec<PathBuf>,
    /// Whether ssh-agent's keys are tried (first), and which agent.
    pub agent: Agent,
    /// known_hosts files, any of which may list the host key.
    pub known_hosts: Vec<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Agent {
    /// `SSH_AUTH_SOCK`, when set.
    FromEnv,
    /// `IdentityAgent PATH`.
    At(PathBuf),
    /// `IdentityAgent none`, `IdentitiesOnly yes`, or `--ssh-key`.
    No,
}

/// The default identity files, in `ssh`'s order, when no `ssh` program says which.
const DEFAULT_IDENTITIES: [&str; 3] = ["id_ed25519", "id_ecdsa", "id_rsa"];

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// `~/x` with this process's home (`ssh -G` prints paths below the home so).
fn expand(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), home()) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(path),
    }
}

/// Apply the SSH configuration to `user@host:port` from the URL (what the URL says wins).
pub(super) fn resolve(
    user: Option<&str>,
    host: &str,
    port: Option<u16>,
    options: &Options,
) -> io::Result<Target> {
    if let Some(key) = &options.ssh_key {
        std::fs::File::open(key).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot load key '{}': {e}", key.display()),
            )
        })?;
    }
    let mut ssh = Command::new("ssh");
    ssh.arg("-G");
    if let Some(file) = &options.ssh_config {
        ssh.arg("-F").arg(file);
    }
    if let Some(user) = user {
        ssh.args(["-l", user]);
    }
    if let Some(port) = port {
        ssh.args(["-p", &port.to_string()]);
    }
    // `--` ends ssh's options: a host name cannot be taken for one.
    ssh.arg("--").arg(host);
    let printed = ssh.stdin(Stdio::null()).stderr(Stdio::piped()).output();
    let settings = match printed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => {
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ssh cannot read its configuration for '{host}': {}",
                    why.trim()
                ),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && options.ssh_config.is_none() => {
            return Ok(as_written(user, host, port, options));
        }
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot run 'ssh -G' to read the SSH configuration: {e}"),
            ))
        }
    };
    from_settings(&settings, host, options)
}

/// The target when no `ssh` program can read the configuration: the URL as written.
fn as_written(user: Option<&str>, host: &str, port: Option<u16>, options: &Options) -> Target {
    let identities = match &options.ssh_key {
        Some(key) => vec![key.clone()],
        None => DEFAULT_IDENTITIES
            .iter()
            .filter_map(|name| home().map(|h| h.join(".ssh").join(name)))
            .filter(|p| p.exists())
            .collect(),
    };
    let known_hosts = match &options.known_hosts {
        Some(file) => vec![file.clone()],
        None => home()
            .map(|h| h.join(".ssh/known_hosts"))
            .into_iter()
            .collect(),
    };
    Target {
        alias: host.to_string(),
        host: host.to_string(),
        port: port.unwrap_or(22),
        user: user
            .map(str::to_string)
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "root".into()),
        identities,
        agent: match options.ssh_key {
            Some(_) => Agent::No,
            None => Agent::FromEnv,
        },
        known_hosts,
    }
}

/// The target from `ssh -G`'s output (`keyword value` lines, keywords in lower case).
fn from_settings(settings: &str, alias: &str, options: &Options) -> io::Result<Target> {
    let mut target = Target {
        alias: alias.to_string(),
        host: alias.to_string(),
        port: 22,
        user: String::new(),
        identities: Vec::new(),
        agent: Agent::FromEnv,
        known_hosts: Vec::new(),
    };
    let mut identities_only = false;
    for line in settings.lines() {
        let Some((keyword, value)) = line.split_once(' ') else {
            continue;
        };
        match keyword {
            "hostname" => target.host = value.to_string(),
            "user" => target.user = value.to_string(),
            "port" => {
                target.port = value.parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("bad port '{value}'"))
                })?
            }
            "identityfile" => target.identities.push(expand(value)),
            "identitiesonly" => identities_only = value == "yes",
            "identityagent" => {
                target.agent = match value {
                    "none" => Agent::No,
                    "SSH_AUTH_SOCK" => Agent::FromEnv,
                    path => Agent::At(expand(path)),
                }
            }
            "userknownhostsfile" => {
                target.known_hosts = value.split_whitespace().map(expand).collect()
            }
            "proxyjump" | "proxycommand" if value != "none" => {
                let name = match keyword {
                    "proxyjump" => "ProxyJump",
                    _ => "ProxyCommand",
                };
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    format!(
                        "the SSH configuration reaches '{alias}' through {name} '{value}', which \
                         syncease cannot follow yet: open a tunnel (e.g. ssh -N -L \
                         2222:HOST:22 JUMPHOST) and use sftp://localhost:2222/PATH"
                    ),
                ));
            }
            _ => {}
        }
    }
    target.identities.retain(|p| p.exists());
    if identities_only {
        target.agent = Agent::No;
    }
    if let Some(key) = &options.ssh_key {
        target.identities = vec![key.clone()];
        target.agent = Agent::No;
    }
    if let Some(file) = &options.known_hosts {
        target.known_hosts = vec![file.clone()];
    }
    Ok(target)
}

/// The SSH client side: checks the host key against the known_hosts files.
pub(super) struct Client {
    host: String,
    port: u16,
    known_hosts: Vec<PathBuf>,
    /// Why the host key was rejected, for the message.
    verdict: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) =
                Some("host certificates are not supported; list the host key itself".into());
            return Ok(false);
        };
        let files: Vec<String> = self
            .known_hosts
            .iter()
            .map(|p| format!("'{}'", p.display()))
            .collect();
        for file in self.known_hosts.iter().filter(|f| f.exists()) {
            match russh::keys::check_known_hosts_path(&self.host, self.port, key, file) {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e) => {
                    let why = format!(
                        "the host key of {} does not match '{}': {e}",
                        self.host,
                        file.display()
                    );
                    *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                    return Ok(false);
                }
            }
        }
        let why = format!(
            "the host key of {} is not in {} (check it, then add it, e.g. with ssh-keyscan)",
            self.host,
            files.join(" or ")
        );
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        Ok(false)
    }
}

/// The SSH settings: AES-GCM first (hardware-accelerated on most CPUs, where bulk uploads
/// spend their time), then russh's usual order; no Nagle delay on the many small requests.
fn ssh_config(timeout: Option<std::time::Duration>) -> client::Config {
    use russh::cipher;
    let mut config = client::Config::default();
    let first = [cipher::AES_128_GCM, cipher::AES_256_GCM];
    let rest = config
        .preferred
        .cipher
        .iter()
        .filter(|c| !first.contains(c));
    let ciphers: Vec<_> = first.iter().chain(rest).copied().collect();
    config.preferred.cipher = ciphers.into();
    config.nodelay = true;
    // --timeout: a server silent that long (three keepalives unanswered) is gone.
    if let Some(timeout) = timeout {
        config.keepalive_interval = Some(timeout / 3);
        config.keepalive_max = 3;
    }
    config
}

/// An open SFTP session: the SSH connection it runs on (kept open by holding it), the
/// server's version and extensions, and the bytes a write request may carry.
pub(super) struct Session {
    pub ssh: client::Handle<Client>,
    pub sftp: RawSftpSession,
    pub version: Version,
    pub chunk: usize,
}

/// How a login succeeded, to log in again the same way (more connections) without trying
/// everything, or asking for a passphrase, again.
#[derive(Clone)]
pub(super) enum Method {
    Agent(PathBuf, russh::keys::PublicKey),
    Key(Arc<russh::keys::PrivateKey>),
}

/// Connect, verify the host key, log in (the way `known` says, else trying each) and open the
/// SFTP subsystem.
pub(super) async fn login(
    target: &Target,
    options: &Options,
    known: Option<&Method>,
) -> io::Result<(Session, Method)> {
    let verdict = Arc::new(Mutex::new(None));
    let handler = Client {
        host: target.host.clone(),
        port: target.port,
        known_hosts: target.known_hosts.clone(),
        verdict: verdict.clone(),
    };
    let ssh_config = Arc::new(ssh_config(options.timeout));
    let address = (target.host.as_str(), target.port);
    let mut ssh = client::connect(ssh_config, address, handler)
        .await
        .map_err(|e| {
            let why = verdict.lock().unwrap_or_else(|e| e.into_inner()).take();
            let kind = match why.is_some() {
                true => io::ErrorKind::PermissionDenied,
                false => io::ErrorKind::ConnectionRefused,
            };
            io_error(kind, why.unwrap_or_else(|| format!("cannot connect: {e}")))
        })?;
    let method = match known {
        Some(method) => again(&mut ssh, target, method).await?,
        None => authenticate(&mut ssh, target).await?,
    };
    let channel = ssh
        .channel_open_session()
        .await
        .map_err(|e| io_error(io::ErrorKind::Other, e))?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(|e| io_error(io::ErrorKind::Other, e))?;
    let sftp = RawSftpSession::new(channel.into_stream());
    // A request unanswered for --timeout fails (none: a century stands for forever).
    let secs = options
        .timeout
        .map_or(100 * 365 * 86_400, |t| t.as_secs().max(1));
    sftp.set_timeout(secs);
    let version = sftp.init().await.map_err(sftp_error)?;
    let mut chunk = CHUNK;
    if version.extensions.contains_key("limits@openssh.com") {
        if let Ok(limits) = sftp.limits().await {
            chunk = (limits.max_write_len as usize).clamp(CHUNK, MAX_CHUNK);
        }
    }
    let session = Session {
        ssh,
        sftp,
        version,
        chunk,
    };
    Ok((session, method))
}

/// Log in the way an earlier connection did.
async fn again(
    ssh: &mut client::Handle<Client>,
    target: &Target,
    method: &Method,
) -> io::Result<Method> {
    let user = target.user.as_str();
    let hash = rsa_hash(ssh).await?;
    let accepted = match method {
        Method::Agent(sock, key) => {
            let mut agent = AgentClient::connect_uds(sock)
                .await
                .map_err(|e| io_error(io::ErrorKind::Other, e))?;
            ssh.authenticate_publickey_with(user, key.clone(), hash, &mut agent)
                .await
                .is_ok_and(|a| a.success())
        }
        Method::Key(key) => ssh
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
            .await
            .is_ok_and(|a| a.success()),
    };
    match accepted {
        true => Ok(method.clone()),
        false => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{user}@{} refused a second login with the same key",
                target.alias
            ),
        )),
    }
}

/// The signature hash an RSA key is to use with this server (the best it offers).
async fn rsa_hash(ssh: &client::Handle<Client>) -> io::Result<Option<russh::keys::HashAlg>> {
    let best = ssh.best_supported_rsa_hash().await;
    Ok(best
        .map_err(|e| io_error(io::ErrorKind::Other, e))?
        .flatten())
}

/// Log in with the agent's keys, then each identity file; on failure, say what was tried.
async fn authenticate(ssh: &mut client::Handle<Client>, target: &Target) -> io::Result<Method> {
    let user = target.user.as_str();
    let hash = rsa_hash(ssh).await?;
    let mut tried = Vec::new();
    let agent = match &target.agent {
        Agent::No => None,
        Agent::FromEnv => std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from),
        Agent::At(path) => Some(path.clone()),
    };
    if let Some(sock) = agent {
        match AgentClient::connect_uds(&sock).await {
            Err(e) => tried.push(format!(
                "ssh-agent at '{}' (unreachable: {e})",
                sock.display()
            )),
            Ok(mut agent) => {
                let keys = agent.request_identities().await.unwrap_or_default();
                let mut names = Vec::new();
                for identity in keys {
                    let AgentIdentity::PublicKey { key, comment } = identity else {
                        continue;
                    };
                    names.push(comment);
                    let answer = ssh
                        .authenticate_publickey_with(user, key.clone(), hash, &mut agent)
                        .await;
                    if answer.is_ok_and(|a| a.success()) {
                        return Ok(Method::Agent(sock, key));
                    }
                }
                tried.push(match names.is_empty() {
                    true => "ssh-agent (no keys)".to_string(),
                    false => format!("ssh-agent ({} not accepted)", names.join(", ")),
                });
            }
        }
    }
    for file in &target.identities {
        let key = match load_key(file) {
            Ok(key) => key,
            Err(why) => {
                tried.push(format!("'{}' ({why})", file.display()));
                continue;
            }
        };
        let key = Arc::new(key);
        let answer = ssh
            .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key.clone(), hash))
            .await
            .map_err(|e| io_error(io::ErrorKind::Other, e))?;
        if answer.success() {
            return Ok(Method::Key(key));
        }
        tried.push(format!("'{}' (not accepted)", file.display()));
    }
    let why = match tried.is_empty() {
        true => "no key to log in with: no ssh-agent (SSH_AUTH_SOCK) and no identity file \
                 (~/.ssh/id_ed25519, id_ecdsa, id_rsa, or IdentityFile in the SSH configuration); \
                 give one with --ssh-key"
            .to_string(),
        false => format!("tried {}", tried.join(", ")),
    };
    Err(io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("{user}@{} refused the login: {why}", target.alias),
    ))
}

/// A private key from `file`, asking for its passphrase if it has one.
fn load_key(file: &Path) -> Result<russh::keys::PrivateKey, String> {
    match russh::keys::load_secret_key(file, None) {
        Ok(key) => Ok(key),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            let phrase = passphrase(file)?;
            russh::keys::load_secret_key(file, Some(&phrase))
                .map_err(|e| format!("cannot decrypt it: {e}"))
        }
        Err(e) => Err(format!("cannot load it: {e}")),
    }
}

/// The passphrase of `file`: from `SSH_ASKPASS` (when there is no terminal, or
/// `SSH_ASKPASS_REQUIRE=force`), else asked on the terminal.
fn passphrase(file: &Path) -> Result<String, String> {
    use std::io::IsTerminal;
    let prompt = format!("Enter passphrase for key '{}': ", file.display());
    let askpass = std::env::var_os("SSH_ASKPASS").filter(|a| !a.is_empty());
    let require = std::env::var("SSH_ASKPASS_REQUIRE").unwrap_or_default();
    let terminal = std::io::stdin().is_terminal() && require != "force";
    match askpass {
        Some(program) if !terminal && require != "never" => {
            let out = Command::new(&program)
                .arg(&prompt)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("encrypted; SSH_ASKPASS failed: {e}"))?;
            if !out.status.success() {
                return Err("encrypted; SSH_ASKPASS gave no passphrase".into());
            }
            let text = String::from_utf8_lossy(&out.stdout);
            Ok(text.trim_end_matches(['\n', '\r']).to_string())
        }
        _ if terminal => rpassword::prompt_password(prompt)
            .map_err(|e| format!("encrypted; cannot read its passphrase: {e}")),
        _ => Err(
            "encrypted, and no terminal to ask its passphrase on: add it to ssh-agent or set \
             SSH_ASKPASS"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_settings_give_the_target_and_the_url_and_options_win() {
        let printed = "user me\nhostname 10.0.0.5\nport 2222\nidentityfile /nonexistent/a\n\
                       identityfile /dev/null\nuserknownhostsfile /k1 /k2\n\
                       identityagent SSH_AUTH_SOCK\nproxyjump none\n";
        let target = from_settings(printed, "nas", &Options::default()).unwrap();
        assert_eq!(
            target,
            Target {
                alias: "nas".into(),
                host: "10.0.0.5".into(),
                port: 2222,
                user: "me".into(),
                identities: vec![PathBuf::from("/dev/null")],
                agent: Agent::FromEnv,
                known_hosts: vec![PathBuf::from("/k1"), PathBuf::from("/k2")],
            }
        );
        let options = Options {
            ssh_key: Some("/my/key".into()),
            known_hosts: Some("/my/hosts".into()),
            ..Options::default()
        };
        let target = from_settings(printed, "nas", &options).unwrap();
        assert_eq!(target.identities, [PathBuf::from("/my/key")]);
        assert_eq!(target.agent, Agent::No);
        assert_eq!(target.known_hosts, [PathBuf::from("/my/hosts")]);
        let only = from_settings("identitiesonly yes\n", "h", &Options::default()).unwrap();
        assert_eq!(only.agent, Agent::No);
        let none = from_settings("identityagent none\n", "h", &Options::default()).unwrap();
        assert_eq!(none.agent, Agent::No);
    }

    #[test]
    fn jump_hosts_and_proxy_commands_are_refused_by_name() {
        for (line, says) in [
            ("proxyjump bastion", "ProxyJump 'bastion'"),
            ("proxycommand nc %h %p", "ProxyCommand 'nc %h %p'"),
        ] {
            let e = from_settings(line, "nas", &Options::default()).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
