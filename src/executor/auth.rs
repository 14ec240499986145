//! Registry credentials for image pulls (job, service and helper images), found as GitLab
//! Runner's `helpers/docker/auth` finds them: `DOCKER_AUTH_CONFIG` (a job variable, or the
//! runner's `environment`), then the runner host's Docker config (`$DOCKER_CONFIG/config.json`,
//! else `$HOME/.docker/config.json`), then the payload's `credentials` of type `registry`. A
//! registry named by an earlier source keeps that source's entry; an image takes the entry whose
//! registry path is the longest prefix of its own (`docker.io/library/busybox`, then
//! `docker.io/library`, then `docker.io`).
//!
//! Secrets: passwords and tokens stay inside [`RegistryAuth`], whose `Debug` hides them; only
//! the source's name reaches the trace. Credential helpers (`credsStore`, `credHelpers`) are not
//! run: a config naming them gets a warning.

use crate::job::{Credential, Variables};
use base64::Engine;
use bollard::auth::DockerCredentials;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Docker Hub's registry name in paths.
const DOCKER_HUB: &str = "docker.io";
/// The source name GitLab Runner prints for `DOCKER_AUTH_CONFIG`.
const SOURCE_VARIABLE: &str = "$DOCKER_AUTH_CONFIG";
/// The source name GitLab Runner prints for the payload's credentials.
const SOURCE_PAYLOAD: &str = "job payload (GitLab Registry)";

/// Credentials for one registry and where they came from.
#[derive(Clone)]
pub(super) struct RegistryAuth {
    /// `$DOCKER_AUTH_CONFIG`, the config file's path, or `job payload (GitLab Registry)`.
    pub source: String,
    /// What the engine is given with the pull.
    pub credentials: DockerCredentials,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("source", &self.source)
            .field("username", &self.credentials.username)
            .field("serveraddress", &self.credentials.serveraddress)
            .finish_non_exhaustive()
    }
}

/// Every registry credential a job may pull with, keyed by registry path. Built once per job by
/// `JobCtx::prepare` (`prepare.rs`), read for every image the job pulls.
#[derive(Debug, Default, Clone)]
pub(super) struct RegistryAuths {
    entries: BTreeMap<String, RegistryAuth>,
    warnings: Vec<String>,
}

/// One entry of a Docker config's `auths`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
    registrytoken: Option<String>,
}

/// The parts of a Docker `config.json` that carry credentials.
#[derive(Deserialize, Default)]
#[serde(default)]
struct DockerConfigFile {
    auths: BTreeMap<String, AuthEntry>,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

impl RegistryAuths {
    /// Collects the job's credentials: `DOCKER_AUTH_CONFIG` from `vars`, then the host file at
    /// `host_config` (if any), then the payload's `credentials`. Problems become warnings (see
    /// [`RegistryAuths::warnings`]), never errors: a pull without credentials says the rest.
    pub(super) fn resolve(
        vars: &Variables,
        host_config: Option<&Path>,
        credentials: &[Credential],
    ) -> Self {
        let mut auths = RegistryAuths::default();
        if let Some(text) = vars
            .get("DOCKER_AUTH_CONFIG")
            .filter(|t| !t.trim().is_empty())
        {
            auths.add_config_text(SOURCE_VARIABLE, text);
        }
        if let Some(path) = host_config {
            match std::fs::read_to_string(path) {
                Ok(text) => auths.add_config_text(&path.display().to_string(), &text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => auths.warnings.push(format!(
                    "cannot read the Docker config {}: {e}",
                    path.display()
                )),
            }
        }
        for c in credentials.iter().filter(|c| c.kind == "registry") {
            auths.add(
                SOURCE_PAYLOAD,
                &c.url,
                DockerCredentials {
                    username: Some(c.username.clone()),
                    password: Some(c.password.clone()),
                    serveraddress: Some(c.url.clone()),
                    ..Default::default()
                },
            );
        }
        auths
    }

    /// What went wrong while reading the sources (for the trace; holds no secret).
    pub(super) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The credentials to pull `image` with, if any source names its registry.
    pub(super) fn for_image(&self, image: &str) -> Option<&RegistryAuth> {
        let path = image_path(image);
        let mut candidate = path.as_str();
        loop {
            if let Some(found) = self.entries.get(candidate) {
                return Some(found);
            }
            candidate = &candidate[..candidate.rfind('/')?];
        }
    }

    /// Adds one registry's entry unless an earlier source already named that registry path.
    fn add(&mut self, source: &str, registry: &str, credentials: DockerCredentials) {
        let key = registry_path(registry);
        if key.is_empty() {
            return;
        }
        self.entries.entry(key).or_insert_with(|| RegistryAuth {
            source: source.to_string(),
            credentials,
        });
    }

    /// Adds the `auths` of a Docker config file's text.
    fn add_config_text(&mut self, source: &str, text: &str) {
        let config: DockerConfigFile = match serde_json::from_str(text) {
            Ok(c) => c,
            // Never serde's message: it quotes the offending text (base64 `user:password`).
            Err(e) => {
                self.warnings.push(format!(
                    "{source} is not a valid Docker config (ignored): {} at line {}, column {}",
                    crate::job::json_error_kind(&e),
                    e.line(),
                    e.column()
                ));
                return;
            }
        };
        if config.creds_store.is_some() || !config.cred_helpers.is_empty() {
            self.warnings.push(format!(
                "{source} names credential helpers (credsStore/credHelpers), which Flotilla does \
                 not run: only its `auths` entries are used"
            ));
        }
        for (registry, entry) in config.auths {
            match entry_credentials(&registry, entry) {
                Ok(credentials) => self.add(source, &registry, credentials),
                Err(message) => self.warnings.push(format!("{source}: {message}")),
            }
        }
    }
}

/// An `auths` entry whose `auth` is not base64 of `user:password` (the value is not shown).
#[derive(Debug, thiserror::Error)]
#[error("the `auth` of {registry:?} is not base64 of `user:password`")]
struct BadAuth {
    registry: String,
}

/// The credentials of one `auths` entry: `auth` (base64 `user:password`) wins over `username`
/// and `password`, as in the Docker CLI.
fn entry_credentials(registry: &str, entry: AuthEntry) -> Result<DockerCredentials, BadAuth> {
    let (mut username, mut password) = (entry.username, entry.password);
    if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
        let bad = || BadAuth {
            registry: registry.to_string(),
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| bad())?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
        let (user, pass) = decoded.split_once(':').ok_or_else(bad)?;
        username = Some(user.to_string());
        password = Some(pass.to_string());
    }
    Ok(DockerCredentials {
        username,
        password,
        identitytoken: entry.identitytoken,
        registrytoken: entry.registrytoken,
        serveraddress: Some(registry.to_string()),
        ..Default::default()
    })
}

/// Where the runner host's Docker config is: `$DOCKER_CONFIG/config.json`, else
/// `$HOME/.docker/config.json`. `env` reads the manager's environment (a parameter for tests).
pub(super) fn host_config_path(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(dir) = env("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    let home = env("HOME").filter(|h| !h.is_empty())?;
    Some(PathBuf::from(home).join(".docker").join("config.json"))
}

/// The registry path a credential's key names (GitLab Runner's `convertToRegistryPath`):
/// `https://index.docker.io/v1/` → `docker.io`, `Reg.io:5000/` → `reg.io:5000`,
/// `reg.io/group/app:tag` → `reg.io/group/app`.
fn registry_path(key: &str) -> String {
    let key = key.trim();
    let lower = key.to_ascii_lowercase();
    if let Some(rest) = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
    {
        let host = rest.split('/').next().unwrap_or(rest);
        return if host == "index.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            host.to_string()
        };
    }
    let mut path = key.trim_end_matches('/');
    if let (Some(colon), Some(slash)) = (path.rfind(':'), path.rfind('/')) {
        if colon > slash {
            path = &path[..colon];
        }
    }
    lower_case_host(path)
}

/// The path credentials are looked up by for an image (GitLab Runner's `dockerImageNamePath`):
/// Docker Hub names get `docker.io/`, `index.docker.io` becomes `docker.io`, the tag or digest
/// goes, the host is lower-cased.
fn image_path(image: &str) -> String {
    let image = image.split('@').next().unwrap_or(image);
    let last = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    let name = match image[last..].find(':') {
        Some(colon) => &image[..last + colon],
        None => image,
    };
    let path = match name.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => {
            if first.eq_ignore_ascii_case("index.docker.io") {
                format!("{DOCKER_HUB}{}", &name[first.len()..])
            } else {
                name.to_string()
            }
        }
        _ => format!("{DOCKER_HUB}/{name}"),
    };
    lower_case_host(&path)
}

fn lower_case_host(path: &str) -> String {
    match path.split_once('/') {
        Some((host, rest)) => format!("{}/{rest}", host.to_ascii_lowercase()),
        None => path.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobVariable;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn config(entries: &[(&str, &str)]) -> String {
        let auths: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(host, userpass)| (host.to_string(), serde_json::json!({"auth": b64(userpass)})))
            .collect();
        serde_json::json!({ "auths": auths }).to_string()
    }

    fn payload(url: &str, user: &str) -> Credential {
        Credential {
            kind: "registry".into(),
            url: url.into(),
            username: user.into(),
            password: "payload-pass".into(),
        }
    }

    fn user_of<'a>(auths: &'a RegistryAuths, image: &str) -> Option<(&'a str, &'a str)> {
        auths.for_image(image).map(|a| {
            (
                a.source.as_str(),
                a.credentials.username.as_deref().unwrap_or(""),
            )
        })
    }

    #[test]
    fn image_paths_follow_gitlab_runner() {
        let cases = [
            ("busybox", "docker.io/busybox"),
            ("library/busybox:1.36", "docker.io/library/busybox"),
            ("index.docker.io/group/app", "docker.io/group/app"),
            (
                "Registry.Example.com/Group/App:v1",
                "registry.example.com/Group/App",
            ),
            (
                "127.0.0.1:5000/private/busybox:latest",
                "127.0.0.1:5000/private/busybox",
            ),
            ("localhost/app@sha256:abcd", "localhost/app"),
            ("reg.io:5000/app:v1@sha256:abcd", "reg.io:5000/app"),
        ];
        for (image, path) in cases {
            assert_eq!(image_path(image), path, "{image}");
        }
    }

    #[test]
    fn registry_keys_normalise_as_gitlab_runner() {
        let cases = [
            ("https://index.docker.io/v1/", "docker.io"),
            ("http://Reg.io:5000/v2/", "reg.io:5000"),
            ("Reg.io:5000/", "reg.io:5000"),
            ("reg.io/group/app:tag", "reg.io/group/app"),
            ("127.0.0.1:5000", "127.0.0.1:5000"),
        ];
        for (key, path) in cases {
            assert_eq!(registry_path(key), path, "{key}");
        }
    }

    #[test]
    fn the_variable_wins_then_the_host_file_then_the_payload() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.json");
        std::fs::write(
            &file,
            config(&[("reg.io", "file-user:p"), ("other.io", "file-other:p")]),
        )
        .unwrap();
        let vars = Variables::new(vec![JobVariable::plain(
            "DOCKER_AUTH_CONFIG",
            config(&[("reg.io", "var-user:p")]),
        )]);
        let credentials = vec![
            payload("reg.io", "payload-reg"),
            payload("other.io", "payload-other"),
            payload("third.io", "payload-third"),
        ];
        let auths = RegistryAuths::resolve(&vars, Some(&file), &credentials);
        assert!(auths.warnings().is_empty(), "{:?}", auths.warnings());
        assert_eq!(
            user_of(&auths, "reg.io/app:1"),
            Some((SOURCE_VARIABLE, "var-user"))
        );
        let file_source = file.display().to_string();
        assert_eq!(
            user_of(&auths, "other.io/x/y"),
            Some((file_source.as_str(), "file-other"))
        );
        assert_eq!(
            user_of(&auths, "third.io/z"),
            Some((SOURCE_PAYLOAD, "payload-third"))
        );
        assert_eq!(user_of(&auths, "nowhere.io/z"), None);
        let found = auths.for_image("reg.io/app").unwrap();
        assert_eq!(found.credentials.password.as_deref(), Some("p"));
        assert!(!format!("{found:?}").contains("\"p\""), "{found:?}");
    }

    #[test]
    fn the_longest_registry_path_wins_and_docker_hub_names_match() {
        let vars = Variables::new(vec![JobVariable::plain(
            "DOCKER_AUTH_CONFIG",
            config(&[
                ("reg.io", "host-wide:p"),
                ("reg.io/team", "team:p"),
                ("https://index.docker.io/v1/", "hub:p"),
            ]),
        )]);
        let auths = RegistryAuths::resolve(&vars, None, &[]);
        assert_eq!(user_of(&auths, "reg.io/team/app").unwrap().1, "team");
        assert_eq!(user_of(&auths, "reg.io/other/app").unwrap().1, "host-wide");
        assert_eq!(user_of(&auths, "busybox").unwrap().1, "hub");
        assert_eq!(user_of(&auths, "index.docker.io/a/b").unwrap().1, "hub");
    }

    #[test]
    fn bad_input_becomes_warnings_without_secrets() {
        let vars = Variables::new(vec![JobVariable::plain(
            "DOCKER_AUTH_CONFIG",
            "{not json secret-value",
        )]);
        let auths = RegistryAuths::resolve(&vars, None, &[]);
        assert_eq!(auths.warnings().len(), 1);
        assert!(!auths.warnings()[0].contains("secret-value"));
        let helpers = serde_json::json!({
            "auths": {"reg.io": {"auth": "%%%"}, "ok.io": {"username": "u", "password": "p"}},
            "credsStore": "desktop",
        });
        let vars = Variables::new(vec![JobVariable::plain(
            "DOCKER_AUTH_CONFIG",
            helpers.to_string(),
        )]);
        let auths = RegistryAuths::resolve(&vars, None, &[]);
        assert_eq!(auths.warnings().len(), 2, "{:?}", auths.warnings());
        assert!(auths.warnings().iter().any(|w| w.contains("credsStore")));
        assert!(auths.for_image("reg.io/x").is_none());
        assert_eq!(user_of(&auths, "ok.io/x").unwrap().1, "u");
    }

    #[test]
    fn a_wrongly_typed_auth_is_reported_without_its_value() {
        // An entry that is a string instead of an object: serde's message quotes the string.
        let secret = b64("deploy:s3cret-pass");
        let text = format!("{{\n  \"auths\": {{\"reg.io\": \"{secret}\"}}\n}}");
        let vars = Variables::new(vec![JobVariable::plain("DOCKER_AUTH_CONFIG", text)]);
        let auths = RegistryAuths::resolve(&vars, None, &[]);
        let warning = &auths.warnings()[0];
        assert!(!warning.contains(&secret), "{warning}");
        assert!(!warning.contains("s3cret"), "{warning}");
        assert!(
            warning.contains("wrong type or value at line 2, column"),
            "{warning}"
        );
    }

    #[test]
    fn the_host_file_is_found_by_docker_config_then_home() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().display().to_string();
        let env = |docker_config: Option<&str>| {
            let home = home.clone();
            let docker_config = docker_config.map(str::to_string);
            move |key: &str| match key {
                "DOCKER_CONFIG" => docker_config.clone(),
                "HOME" => Some(home.clone()),
                _ => None,
            }
        };
        assert_eq!(
            host_config_path(env(Some("/etc/dockercfg"))),
            Some(PathBuf::from("/etc/dockercfg/config.json"))
        );
        let path = host_config_path(env(None)).unwrap();
        assert_eq!(path, dir.path().join(".docker/config.json"));
        assert_eq!(host_config_path(|_| None), None);
        // A missing file is no warning; a present one is read.
        let auths = RegistryAuths::resolve(&Variables::default(), Some(&path), &[]);
        assert!(auths.warnings().is_empty());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, config(&[("reg.io", "home-user:p")])).unwrap();
        let auths = RegistryAuths::resolve(&Variables::default(), Some(&path), &[]);
        assert_eq!(user_of(&auths, "reg.io/x").unwrap().1, "home-user");
    }
}
