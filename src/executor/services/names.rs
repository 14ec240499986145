//! Service image names taken apart as GitLab Runner's `helpers/container/services` does: the
//! service path (registry without its port), the version, the reference to pull, and the
//! hostnames derived from the path.

/// A service image name taken apart as GitLab Runner's `services.SplitNameAndVersion` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServiceName {
    /// Registry (without port) and path: `domain.tld/namespace/service`; empty when invalid.
    pub service: String,
    /// The tag, `@sha256:…` for a digest-only reference, or `latest`.
    pub version: String,
    /// The reference to pull (`:latest` added when it has neither tag nor digest).
    pub image: String,
    /// The hostnames derived from `service`: `/` → `__`, and `/` → `-` when different.
    pub aliases: Vec<String>,
}

/// Takes a service image reference apart; an invalid reference gives an empty `service`.
pub(super) fn split_name_and_version(reference: &str) -> ServiceName {
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        let domain_part = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
        let domain = format!(r"{domain_part}(?:\.{domain_part})*(?::[0-9]+)?");
        let path = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*";
        let name = format!(r"(?:{domain}/)?{path}(?:/{path})*");
        let tag = r"[\w][\w.-]{0,127}";
        let digest = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}";
        regex::Regex::new(&format!(r"^({name})(?::({tag}))?(?:@({digest}))?$"))
            .expect("the reference pattern is valid")
    });
    let Some(found) = pattern.captures(reference) else {
        return ServiceName {
            service: String::new(),
            version: "latest".into(),
            image: reference.to_string(),
            aliases: Vec::new(),
        };
    };
    let name = found.get(1).map_or("", |m| m.as_str());
    let service = without_port(name);
    let (image, version) = match (found.get(2), found.get(3)) {
        (Some(tag), _) => (reference.to_string(), tag.as_str().to_string()),
        (None, Some(digest)) => (reference.to_string(), format!("@{}", digest.as_str())),
        (None, None) => (format!("{name}:latest"), "latest".to_string()),
    };
    let alias = service.replace('/', "__");
    let alternative = service.replace('/', "-");
    let mut aliases = vec![alias.clone()];
    if alternative != alias {
        aliases.push(alternative);
    }
    ServiceName {
        service,
        version,
        image,
        aliases,
    }
}

/// `domain.tld:8080/ns/app` → `domain.tld/ns/app` (only the registry part can hold a port).
fn without_port(name: &str) -> String {
    let (first, rest) = match name.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (name, None),
    };
    let host = match first.split_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => first,
    };
    match rest {
        Some(rest) => format!("{host}/{rest}"),
        None => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_and_aliases_derive_as_gitlab_runner() {
        let digest = "sha256:123456789012345678901234567890123456789012345678901234567890abcd";
        let cases: Vec<(String, &str, String, String, Vec<&str>)> = vec![
            (
                "service".into(),
                "service",
                "latest".into(),
                "service:latest".into(),
                vec!["service"],
            ),
            (
                "service:version".into(),
                "service",
                "version".into(),
                "service:version".into(),
                vec!["service"],
            ),
            (
                "tutum/wordpress:latest".into(),
                "tutum/wordpress",
                "latest".into(),
                "tutum/wordpress:latest".into(),
                vec!["tutum__wordpress", "tutum-wordpress"],
            ),
            (
                "namespace/service".into(),
                "namespace/service",
                "latest".into(),
                "namespace/service:latest".into(),
                vec!["namespace__service", "namespace-service"],
            ),
            (
                "domain.tld:8080/namespace/service:version".into(),
                "domain.tld/namespace/service",
                "version".into(),
                "domain.tld:8080/namespace/service:version".into(),
                vec![
                    "domain.tld__namespace__service",
                    "domain.tld-namespace-service",
                ],
            ),
            (
                "subdomain.domain.tld:8080/service".into(),
                "subdomain.domain.tld/service",
                "latest".into(),
                "subdomain.domain.tld:8080/service:latest".into(),
                vec![
                    "subdomain.domain.tld__service",
                    "subdomain.domain.tld-service",
                ],
            ),
            (
                format!("namespace/service@{digest}"),
                "namespace/service",
                format!("@{digest}"),
                format!("namespace/service@{digest}"),
                vec!["namespace__service", "namespace-service"],
            ),
            (
                format!("domain.tld:8080/service:1.2@{digest}"),
                "domain.tld/service",
                "1.2".into(),
                format!("domain.tld:8080/service:1.2@{digest}"),
                vec!["domain.tld__service", "domain.tld-service"],
            ),
        ];
        for (reference, service, version, image, aliases) in cases {
            let parsed = split_name_and_version(&reference);
            assert_eq!(parsed.service, service, "{reference}");
            assert_eq!(parsed.version, version, "{reference}");
            assert_eq!(parsed.image, image, "{reference}");
            assert_eq!(parsed.aliases, aliases, "{reference}");
        }
        let invalid = split_name_and_version("Not A Valid/Ref");
        assert!(invalid.service.is_empty());
        assert!(invalid.aliases.is_empty());
    }
}
