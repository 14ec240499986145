//! `[runners.docker] network_per_build_pool` and `network_per_build_prefix` (Flotilla's own):
//! the IPv4 range the per-job networks of `FF_NETWORK_PER_BUILD` take their small subnets from,
//! so that many jobs on one engine do not exhaust the engine's default address pools (which hand
//! out a /16 or a /20 per network). Owns the range's parsing and the arithmetic of its subnets;
//! knows nothing of Docker.

use std::net::Ipv4Addr;

/// The default range: the last of Docker's default /16 pools, which the engine reaches only after
/// fourteen networks of its own (and skips while ours use it).
pub const DEFAULT_POOL: &str = "172.31.0.0/16";
/// The default size of one job's subnet: /28, 13 containers (build, helper, services) besides
/// the gateway.
pub const DEFAULT_PREFIX: u8 = 28;

/// An IPv4 range cut into equal subnets, one per job network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetPool {
    base: u32,
    pool_len: u8,
    subnet_len: u8,
}

impl Default for SubnetPool {
    fn default() -> Self {
        SubnetPool {
            base: u32::from(Ipv4Addr::new(172, 31, 0, 0)),
            pool_len: 16,
            subnet_len: DEFAULT_PREFIX,
        }
    }
}

impl SubnetPool {
    /// The pool `cidr` (`a.b.c.d/n`) cut into `/subnet_len` subnets; why not, in words.
    pub fn parse(cidr: &str, subnet_len: u8) -> Result<SubnetPool, String> {
        let (addr, len) = cidr
            .split_once('/')
            .ok_or_else(|| format!("{cidr:?} is not an IPv4 range like {DEFAULT_POOL}"))?;
        let addr: Ipv4Addr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{cidr:?} is not an IPv4 range like {DEFAULT_POOL}"))?;
        let pool_len: u8 = len
            .trim()
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{cidr:?} has no prefix length between 0 and 32"))?;
        if !(16..=29).contains(&subnet_len) {
            return Err(format!(
                "a job subnet of /{subnet_len}: use a prefix from 16 to 29"
            ));
        }
        if subnet_len < pool_len {
            return Err(format!(
                "a job subnet of /{subnet_len} does not fit in {cidr}: the prefix must be \
                 at least {pool_len}"
            ));
        }
        let mask = if pool_len == 0 {
            0
        } else {
            u32::MAX << (32 - pool_len)
        };
        Ok(SubnetPool {
            base: u32::from(addr) & mask,
            pool_len,
            subnet_len,
        })
    }

    /// How many subnets the pool holds.
    pub fn count(&self) -> u32 {
        1u32 << (self.subnet_len - self.pool_len).min(31)
    }

    /// The `index`-th subnet (taken modulo [`count`](Self::count)) as `(subnet, gateway)`:
    /// `172.31.0.16/28` and `172.31.0.17`.
    pub fn subnet(&self, index: u32) -> (String, String) {
        let size = 1u32 << (32 - self.subnet_len);
        let start = self.base + (index % self.count()) * size;
        (
            format!("{}/{}", Ipv4Addr::from(start), self.subnet_len),
            Ipv4Addr::from(start + 1).to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_is_cut_into_equal_subnets_with_their_gateways() {
        let pool = SubnetPool::parse("172.31.0.0/16", 28).unwrap();
        assert_eq!(pool, SubnetPool::default());
        assert_eq!(pool.count(), 4096);
        assert_eq!(
            pool.subnet(0),
            ("172.31.0.0/28".into(), "172.31.0.1".into())
        );
        assert_eq!(
            pool.subnet(1),
            ("172.31.0.16/28".into(), "172.31.0.17".into())
        );
        assert_eq!(
            pool.subnet(4095),
            ("172.31.255.240/28".into(), "172.31.255.241".into())
        );
        assert_eq!(pool.subnet(4096), pool.subnet(0));
        let host_bits = SubnetPool::parse("10.9.8.7/24", 26).unwrap();
        assert_eq!(host_bits.count(), 4);
        assert_eq!(host_bits.subnet(3).0, "10.9.8.192/26");
    }

    #[test]
    fn bad_ranges_and_sizes_are_refused_with_the_reason() {
        for (cidr, len, needle) in [
            ("172.31.0.0", 28, "IPv4 range"),
            ("fd00::/64", 28, "IPv4 range"),
            ("10.0.0.0/33", 28, "prefix length"),
            ("10.0.0.0/24", 20, "does not fit"),
            ("10.0.0.0/16", 30, "from 16 to 29"),
        ] {
            let err = SubnetPool::parse(cidr, len).unwrap_err();
            assert!(err.contains(needle), "{cidr}/{len}: {err}");
        }
    }
}
