//! One page of `GET /projects/{p}/aggregated/instances`, sent by hand: the client crate (4.1)
//! has no `returnPartialSuccess` parameter, and without it Compute (and the fake) fails the
//! whole call when one zone cannot be read. Same credentials and endpoint as the crate's
//! clients; the reply is decoded into the crate's own `InstanceAggregatedList`.

use std::time::{Duration, SystemTime};

use axum::http::Extensions;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_compute_v1::model::InstanceAggregatedList;

use super::classify::{sync_error, ErrorFacts};
use crate::cloud::CloudError;

/// The Compute API root when no endpoint is configured.
pub const DEFAULT_ENDPOINT: &str = "https://compute.googleapis.com";

const METHOD: &str = "instances.aggregatedList";

/// Sends aggregated list requests. Created once per [`super::GceCloud`].
#[derive(Debug, Clone)]
pub struct AggregatedLister {
    http: reqwest::Client,
    url: String,
    credentials: Credentials,
}

/// One page request.
#[derive(Debug, Clone)]
pub struct PageRequest<'a> {
    /// AIP-160 filter, if any.
    pub filter: Option<&'a str>,
    /// `maxResults` (1–500).
    pub max_results: u32,
    /// `pageToken` of the previous page.
    pub page_token: Option<&'a str>,
}

impl AggregatedLister {
    /// A lister for `project` at `endpoint` (host only, as for the crate's `with_endpoint`).
    pub fn new(
        endpoint: &str,
        project: &str,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<Self, CloudError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| CloudError::Failed {
                method: METHOD,
                message: format!("building the http client: {e}"),
            })?;
        let url = format!(
            "{}/compute/v1/projects/{project}/aggregated/instances",
            endpoint.trim_end_matches('/')
        );
        Ok(Self {
            http,
            url,
            credentials,
        })
    }

    /// Fetches one page with `returnPartialSuccess=true`.
    pub async fn page(&self, req: &PageRequest<'_>) -> Result<InstanceAggregatedList, CloudError> {
        let fail = |facts: ErrorFacts| sync_error(METHOD, &facts, SystemTime::now());
        let headers = match self.credentials.headers(Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => data,
            Ok(CacheableResource::NotModified) => Default::default(),
            Err(e) => {
                return Err(fail(ErrorFacts {
                    transport: e.is_transient(),
                    message: format!("credentials: {e}"),
                    ..Default::default()
                }))
            }
        };
        let mut query: Vec<(&str, String)> = vec![
            ("returnPartialSuccess", "true".to_owned()),
            ("maxResults", req.max_results.to_string()),
            ("alt", "json".to_owned()),
        ];
        if let Some(f) = req.filter {
            query.push(("filter", f.to_owned()));
        }
        if let Some(t) = req.page_token {
            query.push(("pageToken", t.to_owned()));
        }
        let transport = |e: reqwest::Error| {
            fail(ErrorFacts {
                transport: true,
                message: e.without_url().to_string(),
                ..Default::default()
            })
        };
        let resp = self
            .http
            .get(&self.url)
            .headers(headers)
            .query(&query)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(fail(ErrorFacts::from_body(Some(status.as_u16()), &body)));
        }
        serde_json::from_slice(&body).map_err(|e| CloudError::Failed {
            method: METHOD,
            message: format!("decoding the aggregated list: {e}"),
        })
    }
}
