//! The telemetry store's settings: retention of each tier, the memory
//! budget, when buckets close, and how addresses and DSCP values are
//! classified (sites, prefixes, traffic classes).

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::error::StoreError;

/// The store's settings. Unknown keys are rejected so a typo in a config
/// file is an error, not a silently ignored setting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// How long the 1 s tier keeps a bucket after it ends.
    pub retention_1s_secs: u64,
    /// How long the 10 s tier keeps a bucket after it ends.
    pub retention_10s_secs: u64,
    /// How long the 1 min tier keeps a bucket after it ends.
    pub retention_1m_secs: u64,
    /// How long interface counter samples are kept.
    pub retention_counters_secs: u64,
    /// When the store's estimated size exceeds this, the oldest buckets
    /// are dropped, finest tier first, then the oldest counter samples.
    pub memory_budget_bytes: u64,
    /// Interfaces (device, ifIndex) whose last counter sample is kept as
    /// the baseline of the next interval's rates. A sender can name any
    /// ifIndex; past this many, the tenth not heard from longest is
    /// forgotten (counted) to make room.
    pub max_counter_interfaces: u64,
    /// A 1 s bucket closes once received time reaches its end plus this
    /// grace, so datagrams a little behind still land in their bucket.
    pub close_grace_ms: u64,
    /// Prefix length an IPv4 address is grouped by when it is in no site.
    pub ipv4_prefix_len: u8,
    /// Prefix length an IPv6 address is grouped by when it is in no site.
    pub ipv6_prefix_len: u8,
    /// The sites' prefixes; an address belongs to the site of the longest
    /// prefix containing it, or to site "" when none does.
    pub sites: Vec<SitePrefix>,
    /// DSCP ranges and their traffic class; a DSCP no rule lists is
    /// best-effort.
    pub classes: Vec<ClassRule>,
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            retention_1s_secs: 10 * 60,
            retention_10s_secs: 6 * 3600,
            retention_1m_secs: 7 * 24 * 3600,
            retention_counters_secs: 7 * 24 * 3600,
            memory_budget_bytes: 1 << 30,
            max_counter_interfaces: 100_000,
            close_grace_ms: 2000,
            ipv4_prefix_len: 24,
            ipv6_prefix_len: 48,
            sites: Vec::new(),
            classes: default_class_rules(),
        }
    }
}

/// One prefix of one site.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SitePrefix {
    pub prefix: IpNet,
    pub site: String,
}

/// The traffic classes the planner schedules by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficClass {
    AiSync,
    AiBulk,
    BestEffort,
}

impl TrafficClass {
    pub const ALL: [TrafficClass; 3] = [
        TrafficClass::AiSync,
        TrafficClass::AiBulk,
        TrafficClass::BestEffort,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TrafficClass::AiSync => "ai-sync",
            TrafficClass::AiBulk => "ai-bulk",
            TrafficClass::BestEffort => "best-effort",
        }
    }

    pub fn parse(text: &str) -> Option<TrafficClass> {
        TrafficClass::ALL
            .into_iter()
            .find(|class| class.as_str() == text)
    }
}

impl fmt::Display for TrafficClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// DSCP values `first..=last` (each 0..=63).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DscpRange {
    pub first: u8,
    pub last: u8,
}

/// The DSCP ranges that map to one class.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClassRule {
    pub dscp: Vec<DscpRange>,
    pub class: TrafficClass,
}

/// CS3 and AF3x (24..=31, where RoCEv2 is usually marked) and EF (46) are
/// ai-sync; CS1, AF1x, CS2 and AF2x (8..=23) are ai-bulk.
pub fn default_class_rules() -> Vec<ClassRule> {
    vec![
        ClassRule {
            dscp: vec![
                DscpRange {
                    first: 24,
                    last: 31,
                },
                DscpRange {
                    first: 46,
                    last: 46,
                },
            ],
            class: TrafficClass::AiSync,
        },
        ClassRule {
            dscp: vec![DscpRange { first: 8, last: 23 }],
            class: TrafficClass::AiBulk,
        },
    ]
}

/// The largest DSCP value (six bits).
pub const MAX_DSCP: u8 = 63;

impl StoreConfig {
    /// Checks every setting, naming the first bad one.
    pub fn check(&self) -> Result<(), StoreError> {
        check_positive("retention_1s_secs", self.retention_1s_secs)?;
        check_positive("retention_10s_secs", self.retention_10s_secs)?;
        check_positive("retention_1m_secs", self.retention_1m_secs)?;
        check_positive("retention_counters_secs", self.retention_counters_secs)?;
        check_positive("memory_budget_bytes", self.memory_budget_bytes)?;
        check_positive("max_counter_interfaces", self.max_counter_interfaces)?;
        if self.close_grace_ms > 3_600_000 {
            return Err(config_error(
                "close_grace_ms",
                format!("{} is more than an hour", self.close_grace_ms),
            ));
        }
        if self.ipv4_prefix_len > 32 {
            return Err(config_error(
                "ipv4_prefix_len",
                format!("{} is longer than 32", self.ipv4_prefix_len),
            ));
        }
        if self.ipv6_prefix_len > 128 {
            return Err(config_error(
                "ipv6_prefix_len",
                format!("{} is longer than 128", self.ipv6_prefix_len),
            ));
        }
        self.check_sites()?;
        self.check_classes()
    }

    fn check_sites(&self) -> Result<(), StoreError> {
        for (index, site) in self.sites.iter().enumerate() {
            if site.site.is_empty() {
                return Err(config_error(
                    format!("sites[{index}].site"),
                    "is empty (\"\" means no site)",
                ));
            }
            let clash = self.sites.iter().take(index).find(|other| {
                other.prefix.trunc() == site.prefix.trunc() && other.site != site.site
            });
            if let Some(other) = clash {
                return Err(config_error(
                    format!("sites[{index}].prefix"),
                    format!(
                        "{} is already a prefix of site {:?}",
                        site.prefix, other.site
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_classes(&self) -> Result<(), StoreError> {
        let mut claimed: [Option<usize>; MAX_DSCP as usize + 1] = [None; MAX_DSCP as usize + 1];
        for (rule_index, rule) in self.classes.iter().enumerate() {
            for (range_index, range) in rule.dscp.iter().enumerate() {
                let field = format!("classes[{rule_index}].dscp[{range_index}]");
                if range.last > MAX_DSCP {
                    return Err(config_error(field, format!("{} is above 63", range.last)));
                }
                if range.first > range.last {
                    return Err(config_error(
                        field,
                        format!("first {} is after last {}", range.first, range.last),
                    ));
                }
                for slot in claimed
                    .iter_mut()
                    .take(usize::from(range.last) + 1)
                    .skip(usize::from(range.first))
                {
                    if let Some(other) = *slot {
                        return Err(config_error(
                            field,
                            format!("overlaps a range of classes[{other}]"),
                        ));
                    }
                    *slot = Some(rule_index);
                }
            }
        }
        Ok(())
    }
}

fn check_positive(field: &str, value: u64) -> Result<(), StoreError> {
    if value == 0 {
        return Err(config_error(field, "must be more than 0"));
    }
    Ok(())
}

fn config_error(field: impl Into<String>, detail: impl Into<String>) -> StoreError {
    StoreError::Config {
        field: field.into(),
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(config: &StoreConfig) -> String {
        match config.check() {
            Err(StoreError::Config { field, .. }) => field,
            other => format!("unexpected: {other:?}"),
        }
    }

    #[test]
    fn defaults_pass_their_own_check() {
        assert_eq!(StoreConfig::default().check(), Ok(()));
    }

    #[test]
    fn check_names_the_bad_field() {
        let config = StoreConfig {
            ipv4_prefix_len: 33,
            ..StoreConfig::default()
        };
        assert_eq!(field_of(&config), "ipv4_prefix_len");

        let config = StoreConfig {
            ipv6_prefix_len: 129,
            ..StoreConfig::default()
        };
        assert_eq!(field_of(&config), "ipv6_prefix_len");

        let config = StoreConfig {
            memory_budget_bytes: 0,
            ..StoreConfig::default()
        };
        assert_eq!(field_of(&config), "memory_budget_bytes");

        let mut config = StoreConfig::default();
        config.classes[1].dscp.push(DscpRange {
            first: 30,
            last: 64,
        });
        assert_eq!(field_of(&config), "classes[1].dscp[1]");

        let mut config = StoreConfig::default();
        config.classes[1].dscp.push(DscpRange {
            first: 30,
            last: 31,
        });
        assert_eq!(field_of(&config), "classes[1].dscp[1]");

        let config = StoreConfig {
            sites: vec![
                SitePrefix {
                    prefix: "10.1.0.0/16".parse().expect("literal"),
                    site: "a".into(),
                },
                SitePrefix {
                    prefix: "10.1.0.0/16".parse().expect("literal"),
                    site: "b".into(),
                },
            ],
            ..StoreConfig::default()
        };
        assert_eq!(field_of(&config), "sites[1].prefix");
    }

    #[test]
    fn deserializes_and_rejects_unknown_keys() {
        let json = r#"{
            "retention_1s_secs": 60,
            "sites": [{"prefix": "10.1.0.0/16", "site": "dc1"}],
            "classes": [{"dscp": [{"first": 26, "last": 26}], "class": "ai-sync"}]
        }"#;
        let config: StoreConfig = serde_json::from_str(json).expect("valid config");
        assert_eq!(config.retention_1s_secs, 60);
        assert_eq!(config.retention_10s_secs, 6 * 3600);
        assert_eq!(config.sites.len(), 1);
        assert_eq!(config.classes[0].class, TrafficClass::AiSync);

        let unknown = r#"{"retention_1s": 60}"#;
        let error = serde_json::from_str::<StoreConfig>(unknown).expect_err("unknown key");
        assert!(error.to_string().contains("retention_1s"), "{error}");
    }
}
