//! One page of `GET /projects/{p}/aggregated/instances`, sent by hand: the client crate (4.1)
//! has no `returnPartialSuccess` parameter, and without it Compute (and the fake) fails the
//! whole call when one zone cannot be read. Same credentials and endpoint as the crate's
//! clients. Only what the pool uses of each VM (name, zone, status, labels, first interface's
//! addresses) is asked for ([`FIELDS`], a partial response) and decoded, into [`ListedPage`]; a
//! server that sends more has the rest skipped unallocated. A shared listing of 2,000 VMs is
//! taken several times a minute, and the full resources (≈ 14 KB a VM with our metadata),
//! decoded into the crate's `Instance` model, were most of the manager's CPU at that scale.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use axum::http::Extensions;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use serde::Deserialize;

use super::body::{short_name, status_of};
use super::classify::{sync_error, ErrorFacts};
use crate::cloud::{CloudError, Instance};

/// The Compute API root when no endpoint is configured.
pub const DEFAULT_ENDPOINT: &str = "https://compute.googleapis.com";

const METHOD: &str = "instances.aggregatedList";

/// The partial response asked for (the `fields` system parameter): what [`ListedPage`] reads.
/// Without it each VM's entry carries its whole resource, metadata included (the startup
/// script and TLS material, ≈ 14 KB a VM).
pub const FIELDS: &str = "nextPageToken,unreachables,items/*/warning,\
items/*/instances(name,zone,status,labels,networkInterfaces(networkIP,accessConfigs(natIP)))";

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
    pub async fn page(&self, req: &PageRequest<'_>) -> Result<ListedPage, CloudError> {
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
            ("fields", FIELDS.to_owned()),
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
        decode_page(&body)
    }
}

/// One page of the aggregated list, as the pool reads it.
#[derive(Debug, Default)]
pub struct ListedPage {
    /// The VMs of every zone on this page.
    pub instances: Vec<Instance>,
    /// Zones this page says could not be read (an `UNREACHABLE` warning or `unreachables`).
    pub unreachable_zones: Vec<String>,
    /// The token of the next page, if any.
    pub next_page_token: Option<String>,
}

/// Decodes one page's JSON body.
pub fn decode_page(body: &[u8]) -> Result<ListedPage, CloudError> {
    let wire: WirePage = serde_json::from_slice(body).map_err(|e| CloudError::Failed {
        method: METHOD,
        message: format!("decoding the aggregated list: {e}"),
    })?;
    let mut page = ListedPage {
        next_page_token: wire.next_page_token.filter(|t| !t.is_empty()),
        ..ListedPage::default()
    };
    for (scope, list) in wire.items {
        let zone = scope.strip_prefix("zones/").unwrap_or(&scope);
        if list.warning.and_then(|w| w.code).as_deref() == Some("UNREACHABLE") {
            page.unreachable_zones.push(zone.to_owned());
        }
        page.instances
            .extend(list.instances.into_iter().map(|i| i.into_instance(zone)));
    }
    page.unreachable_zones
        .extend(wire.unreachables.iter().map(|u| short_name(u).to_owned()));
    Ok(page)
}

/// `InstanceAggregatedList`, the parts read (serde skips the others without keeping them).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePage {
    #[serde(default)]
    items: BTreeMap<String, WireScopedList>,
    next_page_token: Option<String>,
    #[serde(default)]
    unreachables: Vec<String>,
}

/// `InstancesScopedList`.
#[derive(Deserialize)]
struct WireScopedList {
    #[serde(default)]
    instances: Vec<WireInstance>,
    warning: Option<WireWarning>,
}

#[derive(Deserialize)]
struct WireWarning {
    code: Option<String>,
}

/// `Instance`, the fields the pool reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireInstance {
    name: Option<String>,
    zone: Option<String>,
    status: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    network_interfaces: Vec<WireNic>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireNic {
    #[serde(rename = "networkIP")]
    network_ip: Option<String>,
    #[serde(default)]
    access_configs: Vec<WireAccessConfig>,
}

#[derive(Deserialize)]
struct WireAccessConfig {
    #[serde(rename = "natIP")]
    nat_ip: Option<String>,
}

impl WireInstance {
    /// As `body::instance_from_model` reads a fetched Instance: the first interface's
    /// addresses (absent when they do not parse), `fallback_zone` when it names none.
    fn into_instance(self, fallback_zone: &str) -> Instance {
        let mut nics = self.network_interfaces.into_iter();
        let nic = nics.next();
        let parse = |s: Option<String>| s.and_then(|s| s.parse::<IpAddr>().ok());
        let (internal, external) = match nic {
            Some(n) => (
                n.network_ip,
                n.access_configs.into_iter().next().and_then(|a| a.nat_ip),
            ),
            None => (None, None),
        };
        Instance {
            name: self.name.unwrap_or_default(),
            zone: self
                .zone
                .as_deref()
                .map(short_name)
                .unwrap_or(fallback_zone)
                .to_owned(),
            status: status_of(self.status.as_deref()),
            internal_ip: parse(internal),
            external_ip: parse(external),
            labels: self.labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::InstanceStatus;
    use google_cloud_compute_v1::model::InstanceAggregatedList;

    /// A page as Compute writes it, with the fields the pool skips (disks, metadata, …).
    const PAGE: &str = r#"{
      "kind": "compute#instanceAggregatedList",
      "id": "projects/p/aggregated/instances",
      "items": {
        "zones/us-central1-a": {
          "instances": [{
            "kind": "compute#instance", "id": "1", "name": "runner-a",
            "zone": "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-a",
            "status": "RUNNING", "labels": {"flotilla-manager": "m1"},
            "disks": [{"boot": true, "autoDelete": true}],
            "metadata": {"items": [{"key": "startup-script", "value": "echo hi"}]},
            "networkInterfaces": [{"network": "global/networks/default",
              "networkIP": "10.0.0.2",
              "accessConfigs": [{"name": "External NAT", "natIP": "34.1.2.3"}]}],
            "somethingNew": {"nested": [1, 2, 3]}
          }, {
            "name": "runner-b", "status": "STAGING",
            "networkInterfaces": [{"networkIP": "not-an-address"}]
          }]
        },
        "zones/us-central1-b": {
          "warning": {"code": "UNREACHABLE", "message": "zone down"}
        },
        "zones/us-central1-c": {
          "warning": {"code": "NO_RESULTS_ON_PAGE", "message": "none"}
        }
      },
      "nextPageToken": "tok",
      "unreachables": ["projects/p/zones/europe-west1-b"]
    }"#;

    #[test]
    fn a_page_is_read_as_the_crate_model_reads_it() {
        let page = decode_page(PAGE.as_bytes()).unwrap();
        assert_eq!(page.next_page_token.as_deref(), Some("tok"));
        assert_eq!(
            page.unreachable_zones,
            vec!["us-central1-b".to_owned(), "europe-west1-b".to_owned()]
        );
        // The crate's full model, read with the function a fetched VM goes through, agrees.
        let model: InstanceAggregatedList = serde_json::from_str(PAGE).unwrap();
        let expected: Vec<Instance> = model
            .items
            .iter()
            .flat_map(|(scope, l)| {
                let zone = scope.strip_prefix("zones/").unwrap_or(scope);
                l.instances
                    .iter()
                    .map(move |i| super::super::body::instance_from_model(i, zone))
            })
            .collect();
        assert_eq!(page.instances, expected);
        assert_eq!(page.instances[0].status, InstanceStatus::Running);
        assert_eq!(page.instances[0].external_ip, "34.1.2.3".parse().ok());
        assert_eq!(page.instances[1].zone, "us-central1-a");
        assert_eq!(page.instances[1].internal_ip, None);
    }

    #[test]
    fn an_empty_page_and_a_bad_body() {
        let page = decode_page(b"{}").unwrap();
        assert!(page.instances.is_empty() && page.next_page_token.is_none());
        let empty_token = decode_page(br#"{"nextPageToken": ""}"#).unwrap();
        assert!(empty_token.next_page_token.is_none());
        let err = decode_page(b"{\"items\": 3}").unwrap_err().to_string();
        assert!(err.contains("decoding the aggregated list"), "{err}");
    }
}
