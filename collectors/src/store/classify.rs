//! Classification of what the hot path keeps as plain numbers: the DSCP
//! to traffic class table, and addresses to their site and prefix.
//!
//! This runs when a bucket closes, once per distinct flow key, never per
//! record: sites and prefixes are functions of the addresses, so the open
//! bucket does not need them in its key.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::config::{MAX_DSCP, StoreConfig, TrafficClass};
use super::ingest::FingerprintHasher;

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FingerprintHasher>>;

/// Where an address belongs: its site (index into the site names, 0 is
/// the empty "no site") and its prefix (index into the prefix texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    pub site: u32,
    pub prefix: u32,
}

/// One site prefix in the one-number address space of
/// [`crate::record::addr_to_u128`].
#[derive(Debug, Clone)]
struct SiteEntry {
    network: u128,
    mask: u128,
    site: u32,
    /// The configured prefix, as text (`10.1.0.0/16`).
    text: String,
}

/// Forget cached addresses beyond this many, so a scan of the address
/// space cannot grow the cache without bound.
const ADDRESS_CACHE_LIMIT: usize = 1 << 20;

pub(crate) struct Classifier {
    class_of_dscp: [TrafficClass; MAX_DSCP as usize + 1],
    /// Longest prefix first, so the first match is the longest.
    sites: Vec<SiteEntry>,
    site_names: Vec<String>,
    ipv4_prefix_len: u8,
    ipv6_prefix_len: u8,
    prefixes: Vec<String>,
    prefix_ids: FastMap<(u128, u8), u32>,
    places: FastMap<u128, Place>,
}

/// The number of `::ffff:0:0/96`, where IPv4 addresses are mapped.
const IPV4_MAPPED_BASE: u128 = 0xffff_u128 << 32;
const IPV4_MAPPED_MASK: u128 = !0xffff_ffff_u128;

pub(crate) fn is_ipv4_mapped(address: u128) -> bool {
    address & IPV4_MAPPED_MASK == IPV4_MAPPED_BASE
}

/// The mask of a prefix `length` bits long over 128 bits.
fn mask_of(length: u8) -> u128 {
    match length {
        0 => 0,
        1..=127 => u128::MAX << (128 - u32::from(length)),
        _ => u128::MAX,
    }
}

/// A prefix in the one-number space: IPv4 prefixes move under ::ffff:0:0/96.
fn mapped_prefix(prefix: &IpNet) -> (u128, u8) {
    match prefix.trunc() {
        IpNet::V4(v4) => (
            u128::from(v4.network().to_ipv6_mapped()),
            96 + v4.prefix_len(),
        ),
        IpNet::V6(v6) => (u128::from(v6.network()), v6.prefix_len()),
    }
}

impl Classifier {
    pub fn new(config: &StoreConfig) -> Classifier {
        let mut class_of_dscp = [TrafficClass::BestEffort; MAX_DSCP as usize + 1];
        for rule in &config.classes {
            for range in &rule.dscp {
                for dscp in range.first..=range.last.min(MAX_DSCP) {
                    if let Some(slot) = class_of_dscp.get_mut(usize::from(dscp)) {
                        *slot = rule.class;
                    }
                }
            }
        }
        let mut site_names = vec![String::new()];
        let mut sites: Vec<(u8, SiteEntry)> = Vec::new();
        for site in &config.sites {
            let id = match site_names.iter().position(|name| *name == site.site) {
                Some(position) => position,
                None => {
                    site_names.push(site.site.clone());
                    site_names.len() - 1
                }
            };
            let (network, length) = mapped_prefix(&site.prefix);
            let entry = SiteEntry {
                network,
                mask: mask_of(length),
                site: id as u32,
                text: site.prefix.trunc().to_string(),
            };
            sites.push((length, entry));
        }
        // Stable sort: for equal prefixes the first configured wins.
        sites.sort_by_key(|(length, _)| std::cmp::Reverse(*length));
        Classifier {
            class_of_dscp,
            sites: sites.into_iter().map(|(_, entry)| entry).collect(),
            site_names,
            ipv4_prefix_len: config.ipv4_prefix_len.min(32),
            ipv6_prefix_len: config.ipv6_prefix_len.min(128),
            prefixes: Vec::new(),
            prefix_ids: FastMap::default(),
            places: FastMap::default(),
        }
    }

    pub fn class_of(&self, dscp: u8) -> TrafficClass {
        self.class_of_dscp
            .get(usize::from(dscp))
            .copied()
            .unwrap_or(TrafficClass::BestEffort)
    }

    pub fn site_name(&self, site: u32) -> &str {
        self.site_names
            .get(site as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    pub fn prefix_text(&self, prefix: u32) -> &str {
        self.prefixes
            .get(prefix as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The caches have grown too large: [`Self::trim_caches`] is due.
    pub fn caches_full(&self) -> bool {
        self.places.len() > ADDRESS_CACHE_LIMIT || self.prefixes.len() > ADDRESS_CACHE_LIMIT
    }

    /// Drops the caches. Call only between uses of [`Place`]s: their
    /// prefix ids are invalid afterwards.
    pub fn trim_caches(&mut self) {
        self.places.clear();
        self.prefixes.clear();
        self.prefix_ids.clear();
    }

    /// The site and prefix of `address`, cached.
    pub fn place_of(&mut self, address: u128) -> Place {
        if let Some(place) = self.places.get(&address) {
            return *place;
        }
        let place = self.lookup(address);
        self.places.insert(address, place);
        place
    }

    fn lookup(&mut self, address: u128) -> Place {
        if let Some(entry) = self
            .sites
            .iter()
            .find(|entry| address & entry.mask == entry.network)
        {
            let (site, text) = (entry.site, entry.text.clone());
            let prefix = self.intern_prefix((entry.network, 0xff), || text);
            return Place { site, prefix };
        }
        let (length, mapped_length) = if is_ipv4_mapped(address) {
            (self.ipv4_prefix_len, 96 + self.ipv4_prefix_len)
        } else {
            (self.ipv6_prefix_len, self.ipv6_prefix_len)
        };
        let network = address & mask_of(mapped_length);
        let prefix = self.intern_prefix((network, mapped_length), || prefix_text(network, length));
        Place { site: 0, prefix }
    }

    /// The id of a prefix text, keyed by network and mapped length (site
    /// prefixes use length 0xff, so a site's prefix and an equal unsited
    /// one never share an id by accident; they share the text anyway).
    fn intern_prefix(&mut self, key: (u128, u8), text: impl FnOnce() -> String) -> u32 {
        if let Some(id) = self.prefix_ids.get(&key) {
            return *id;
        }
        self.prefixes.push(text());
        let id = (self.prefixes.len() - 1) as u32;
        self.prefix_ids.insert(key, id);
        id
    }
}

/// `network` (already masked) as prefix text of `length` bits in its own
/// family: `10.1.2.0/24`, `2001:db8::/48`.
fn prefix_text(network: u128, length: u8) -> String {
    match crate::record::u128_to_addr(network) {
        IpAddr::V4(v4) => Ipv4Net::new(v4, length)
            .map(|net| net.to_string())
            .unwrap_or_else(|_| format!("{v4}/32")),
        IpAddr::V6(v6) => Ipv6Net::new(v6, length)
            .map(|net| net.to_string())
            .unwrap_or_else(|_| format!("{v6}/128")),
    }
}

/// An address number as text in its own family (`10.0.0.1`, `2001:db8::1`).
pub(crate) fn address_text(address: u128) -> String {
    crate::record::u128_to_addr(address).to_string()
}

/// The inverse of [`address_text`].
pub(crate) fn parse_address(text: &str) -> Option<u128> {
    let address: IpAddr = text.parse().ok()?;
    Some(crate::record::addr_to_u128(address))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::addr_to_u128;
    use crate::store::config::SitePrefix;

    fn number(text: &str) -> u128 {
        addr_to_u128(text.parse().expect("literal address"))
    }

    fn classifier(sites: &[(&str, &str)]) -> Classifier {
        let config = StoreConfig {
            sites: sites
                .iter()
                .map(|(prefix, site)| SitePrefix {
                    prefix: prefix.parse().expect("literal prefix"),
                    site: (*site).to_string(),
                })
                .collect(),
            ..StoreConfig::default()
        };
        Classifier::new(&config)
    }

    fn site_and_prefix(classifier: &mut Classifier, address: &str) -> (String, String) {
        let place = classifier.place_of(number(address));
        (
            classifier.site_name(place.site).to_string(),
            classifier.prefix_text(place.prefix).to_string(),
        )
    }

    #[test]
    fn longest_site_prefix_wins() {
        let mut classifier = classifier(&[
            ("10.1.0.0/16", "wide"),
            ("10.1.2.0/24", "narrow"),
            ("2001:db8::/32", "v6site"),
        ]);
        let cases = [
            ("10.1.2.3", "narrow", "10.1.2.0/24"),
            ("10.1.3.3", "wide", "10.1.0.0/16"),
            ("10.2.3.4", "", "10.2.3.0/24"),
            ("2001:db8:1::5", "v6site", "2001:db8::/32"),
            ("2001:db9:1:2::5", "", "2001:db9:1::/48"),
        ];
        for (address, site, prefix) in cases {
            assert_eq!(
                site_and_prefix(&mut classifier, address),
                (site.to_string(), prefix.to_string()),
                "{address}"
            );
        }
        // Cached answers are the same answers.
        assert_eq!(
            site_and_prefix(&mut classifier, "10.1.2.3"),
            ("narrow".to_string(), "10.1.2.0/24".to_string())
        );
    }

    #[test]
    fn default_dscp_classes() {
        let classifier = classifier(&[]);
        let expected = |dscp: u8| match dscp {
            24..=31 | 46 => TrafficClass::AiSync,
            8..=23 => TrafficClass::AiBulk,
            _ => TrafficClass::BestEffort,
        };
        for dscp in 0..=MAX_DSCP {
            assert_eq!(classifier.class_of(dscp), expected(dscp), "dscp {dscp}");
        }
        assert_eq!(classifier.class_of(26), TrafficClass::AiSync);
        assert_eq!(classifier.class_of(10), TrafficClass::AiBulk);
        assert_eq!(classifier.class_of(0), TrafficClass::BestEffort);
        assert_eq!(classifier.class_of(200), TrafficClass::BestEffort);
    }
}
