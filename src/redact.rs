//! Credentials cut out of URLs before they reach a log, a trace or an error message: a
//! configured runner `url` may carry `user:password@` (HTTP basic auth to a proxy in front of
//! GitLab), and signed object-storage URLs carry their signature in the query. A leaf module:
//! imports nothing of the crate.

use std::borrow::Cow;

/// `url` without the `user:password@` of its authority and without its query; unchanged (and
/// not copied) when it has neither.
pub fn url<S: AsRef<str> + ?Sized>(url: &S) -> Cow<'_, str> {
    let text = url.as_ref();
    let (before_query, had_query) = match text.split_once('?') {
        Some((head, _)) => (head, true),
        None => (text, false),
    };
    let authority_start = before_query.find("://").map(|i| i + 3);
    let userinfo_end = authority_start.and_then(|start| {
        let authority_end = before_query[start..]
            .find('/')
            .map_or(before_query.len(), |i| start + i);
        before_query[start..authority_end]
            .rfind('@')
            .map(|i| (start, start + i + 1))
    });
    match userinfo_end {
        None if !had_query => Cow::Borrowed(text),
        None => Cow::Owned(before_query.to_string()),
        Some((start, end)) => Cow::Owned(format!(
            "{}{}",
            &before_query[..start],
            &before_query[end..]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn userinfo_and_query_are_cut() {
        let cases = [
            ("https://gitlab.example.com/", "https://gitlab.example.com/"),
            (
                "https://bot:s3cret@gitlab.example.com/api/v4/jobs/request",
                "https://gitlab.example.com/api/v4/jobs/request",
            ),
            ("http://user@host:8080", "http://host:8080"),
            (
                "https://storage.example/bucket/o?X-Goog-Signature=abcd",
                "https://storage.example/bucket/o",
            ),
            (
                "https://host/path@not-userinfo",
                "https://host/path@not-userinfo",
            ),
            ("not a url", "not a url"),
        ];
        for (input, shown) in cases {
            assert_eq!(url(input), shown, "{input}");
        }
    }
}
