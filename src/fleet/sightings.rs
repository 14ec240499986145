//! What the pool waits to see in its shared listing instead of calling Compute once per VM: the
//! creation workers asking for their new VM's address (answered from the next listing that
//! shows it running with one), and the held VMs a listing missed that a get is checking. Owned
//! by the actor; knows no cloud.

use crate::cloud::{Instance, InstanceStatus, Listing};
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// A creation worker waiting for its VM's address.
struct Ask {
    asked: Instant,
    reply: oneshot::Sender<Option<Instance>>,
}

/// The pending asks and checks of one pool.
#[derive(Default)]
pub(super) struct Sightings {
    asks: BTreeMap<String, Ask>,
    checking: BTreeSet<String>,
}

impl Sightings {
    /// VM `name`'s creation worker asked at `asked` (its insert had finished).
    pub fn ask(&mut self, name: String, asked: Instant, reply: oneshot::Sender<Option<Instance>>) {
        self.asks.insert(name, Ask { asked, reply });
    }

    /// Whether a creation worker waits for a listing (asks whose worker is gone are dropped by
    /// the next [`Sightings::answer`]).
    pub fn wants_listing(&self) -> bool {
        self.asks.values().any(|a| !a.reply.is_closed())
    }

    /// Answers the asks a listing begun at `started` settles: a VM it shows running with an
    /// address gets it; a VM it does not show so, though it began after the ask, gets `None`
    /// (its worker then asks Compute itself). Others wait for the next listing.
    pub fn answer(&mut self, listing: &Listing, started: Instant) {
        self.asks.retain(|_, a| !a.reply.is_closed());
        if self.asks.is_empty() {
            return;
        }
        let mut shown: BTreeMap<&str, &Instance> = BTreeMap::new();
        for i in &listing.instances {
            let usable = i.status == InstanceStatus::Running
                && (i.internal_ip.is_some() || i.external_ip.is_some());
            if usable && self.asks.contains_key(&i.name) {
                shown.insert(i.name.as_str(), i);
            }
        }
        let names: Vec<String> = self.asks.keys().cloned().collect();
        for name in names {
            let found = shown.get(name.as_str()).map(|i| (*i).clone());
            let settled =
                found.is_some() || self.asks.get(&name).is_some_and(|a| a.asked <= started);
            if let Some(ask) = settled.then(|| self.asks.remove(&name)).flatten() {
                let _ = ask.reply.send(found);
            }
        }
    }

    /// Starts checking VM `name`: false when a check already runs.
    pub fn begin_check(&mut self, name: &str) -> bool {
        self.checking.insert(name.to_string())
    }

    /// A check of `name` ended.
    pub fn end_check(&mut self, name: &str) {
        self.checking.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    fn inst(name: &str, status: InstanceStatus, ip: bool) -> Instance {
        Instance {
            name: name.into(),
            zone: "zone-a".into(),
            status,
            internal_ip: ip.then_some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
            external_ip: None,
            labels: BTreeMap::new(),
        }
    }

    #[tokio::test]
    async fn asks_are_answered_by_the_first_listing_that_settles_them() {
        let t0 = Instant::now();
        let mut s = Sightings::default();
        let (a_tx, mut a_rx) = oneshot::channel();
        let (b_tx, mut b_rx) = oneshot::channel();
        s.ask("a".into(), t0 + Duration::from_secs(1), a_tx);
        s.ask("b".into(), t0 + Duration::from_secs(1), b_tx);
        assert!(s.wants_listing());
        // Begun before the asks: "a" shown running answers; "b" (staging) waits.
        let listing = Listing {
            instances: vec![
                inst("a", InstanceStatus::Running, true),
                inst("b", InstanceStatus::Staging, false),
            ],
            unreachable_zones: vec![],
        };
        s.answer(&listing, t0);
        assert_eq!(a_rx.try_recv().unwrap().map(|i| i.name), Some("a".into()));
        assert!(b_rx.try_recv().is_err());
        assert!(s.wants_listing());
        // Begun after the ask and still not shown running: None (the worker gets it itself).
        s.answer(&Listing::default(), t0 + Duration::from_secs(2));
        assert_eq!(b_rx.try_recv().unwrap(), None);
        assert!(!s.wants_listing());
    }

    #[test]
    fn closed_asks_want_nothing_and_checks_run_once() {
        let mut s = Sightings::default();
        let (tx, rx) = oneshot::channel();
        s.ask("a".into(), Instant::now(), tx);
        drop(rx);
        assert!(!s.wants_listing());
        assert!(s.begin_check("x"));
        assert!(!s.begin_check("x"));
        s.end_check("x");
        assert!(s.begin_check("x"));
    }
}
