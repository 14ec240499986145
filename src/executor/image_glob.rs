//! Matching an image name against an operator's doublestar glob (`allowed_images`,
//! `allowed_services`): shared by the allow-list check and the services, beneath both.

/// Whether `image` matches the doublestar glob `pattern` (`*` stays within a path segment,
/// `**` crosses them). A pattern that does not compile matches nothing (config validation
/// reports it).
pub(super) fn glob_matches(pattern: &str, image: &str) -> bool {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher().is_match(image))
        .unwrap_or(false)
}
