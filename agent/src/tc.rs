//! Traffic control messages for aiwan's rate limits: an htb root qdisc
//! `a1:`, one htb class per [`ClassLimit`], and u32 filters matching DSCP.
//!
//! netlink-packet-route 0.34 has no htb types, so the htb attributes
//! (`TCA_HTB_INIT` with `struct tc_htb_glob`, `TCA_HTB_PARMS` with `struct
//! tc_htb_opt`, the 64-bit rates and the rate tables) are encoded here, as
//! iproute2's `tc` encodes them (`tc/q_htb.c`, `tc/tc_core.c`), so that the
//! tests can compare our messages byte for byte with captures of `tc`.
//! u32 filters use netlink-packet-route's types.

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_TYPE_MASK, Nla, NlaBuffer, NlasIterator, Parseable,
    parse_u32, parse_u64,
};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::tc::{
    TcAttribute, TcFilterU32Option, TcHandle, TcMessage, TcOption, TcU32Key, TcU32Selector,
    TcU32SelectorFlags,
};

use super::state::{
    ClassLimit, FILTER_PRIO_V4, FILTER_PRIO_V6, Family, PARENT_CLASS_ID, QDISC_MAJOR,
};

pub const TCA_HTB_PARMS: u16 = 1;
pub const TCA_HTB_INIT: u16 = 2;
pub const TCA_HTB_CTAB: u16 = 3;
pub const TCA_HTB_RTAB: u16 = 4;
pub const TCA_HTB_DIRECT_QLEN: u16 = 5;
pub const TCA_HTB_RATE64: u16 = 6;
pub const TCA_HTB_CEIL64: u16 = 7;

/// `TC_HTB_PROTOVER`, the htb ABI version `tc` announces.
pub const HTB_VERSION: u32 = 3;
/// tc's default `r2q` (rate to quantum divisor).
pub const HTB_RATE2QUANTUM: u32 = 10;
/// tc's default MTU for htb's rate tables and bursts.
pub const HTB_MTU: u32 = 1600;
/// `LINKLAYER_ETHERNET`.
pub const LINKLAYER_ETHERNET: u8 = 1;
/// Scheduler ticks per microsecond as tc computes them from
/// `/proc/net/psched` (`t2us / us2t * clock_res / 1e6`). The kernel has
/// published `000003e8 00000040 000f4240 3b9aca00` since 2.6.31: 1000/64.
pub const TICK_IN_USEC: f64 = 15.625;
/// The `HZ` tc reads from `/proc/net/psched` (its 4th field, 1e9, once the
/// 3rd is 1e6): bursts are `rate / HZ + mtu` bytes.
pub const PSCHED_HZ: u64 = 1_000_000_000;

/// `ETH_P_IP`.
pub const ETH_P_IP: u16 = 0x0800;
/// `ETH_P_IPV6`.
pub const ETH_P_IPV6: u16 = 0x86DD;

/// `struct tc_ratespec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateSpec {
    pub cell_log: u8,
    pub linklayer: u8,
    pub overhead: u16,
    pub cell_align: i16,
    pub mpu: u16,
    /// Bytes per second, saturated at `u32::MAX` (the 64-bit rate then goes
    /// in `TCA_HTB_RATE64` / `CEIL64`).
    pub rate: u32,
}

impl RateSpec {
    pub const LEN: usize = 12;

    fn emit(&self, buf: &mut [u8]) {
        buf[0] = self.cell_log;
        buf[1] = self.linklayer;
        buf[2..4].copy_from_slice(&self.overhead.to_ne_bytes());
        buf[4..6].copy_from_slice(&self.cell_align.to_ne_bytes());
        buf[6..8].copy_from_slice(&self.mpu.to_ne_bytes());
        buf[8..12].copy_from_slice(&self.rate.to_ne_bytes());
    }

    fn parse(buf: &[u8]) -> Result<RateSpec, DecodeError> {
        if buf.len() < Self::LEN {
            return Err(DecodeError::buffer_too_small(buf.len(), Self::LEN));
        }
        Ok(RateSpec {
            cell_log: buf[0],
            linklayer: buf[1],
            overhead: u16::from_ne_bytes([buf[2], buf[3]]),
            cell_align: i16::from_ne_bytes([buf[4], buf[5]]),
            mpu: u16::from_ne_bytes([buf[6], buf[7]]),
            rate: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
        })
    }
}

/// `struct tc_htb_glob`, the qdisc's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HtbGlob {
    pub version: u32,
    pub rate2quantum: u32,
    /// The minor of the default class; 0 sends unclassified traffic
    /// unshaped.
    pub defcls: u32,
    pub debug: u32,
    pub direct_pkts: u32,
}

impl HtbGlob {
    pub const LEN: usize = 20;

    fn words(&self) -> [u32; 5] {
        [
            self.version,
            self.rate2quantum,
            self.defcls,
            self.debug,
            self.direct_pkts,
        ]
    }
}

/// `struct tc_htb_opt`, a class's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HtbOpt {
    pub rate: RateSpec,
    pub ceil: RateSpec,
    /// Burst, in scheduler ticks at `rate`.
    pub buffer: u32,
    /// Ceil burst, in ticks at `ceil`.
    pub cbuffer: u32,
    pub quantum: u32,
    pub level: u32,
    pub prio: u32,
}

impl HtbOpt {
    pub const LEN: usize = 2 * RateSpec::LEN + 20;
}

/// One attribute inside an htb `TCA_OPTIONS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HtbAttr {
    Parms(HtbOpt),
    Init(HtbGlob),
    /// Ceil rate table: 256 transmission times (ticks) by packet size cell.
    Ctab(Vec<u32>),
    /// Rate table.
    Rtab(Vec<u32>),
    DirectQlen(u32),
    /// The rate in bytes per second when it does not fit 32 bits.
    Rate64(u64),
    Ceil64(u64),
    Other(DefaultNla),
}

impl Nla for HtbAttr {
    fn value_len(&self) -> usize {
        match self {
            HtbAttr::Parms(_) => HtbOpt::LEN,
            HtbAttr::Init(_) => HtbGlob::LEN,
            HtbAttr::Ctab(t) | HtbAttr::Rtab(t) => 4 * t.len(),
            HtbAttr::DirectQlen(_) => 4,
            HtbAttr::Rate64(_) | HtbAttr::Ceil64(_) => 8,
            HtbAttr::Other(nla) => nla.value_len(),
        }
    }

    fn kind(&self) -> u16 {
        match self {
            HtbAttr::Parms(_) => TCA_HTB_PARMS,
            HtbAttr::Init(_) => TCA_HTB_INIT,
            HtbAttr::Ctab(_) => TCA_HTB_CTAB,
            HtbAttr::Rtab(_) => TCA_HTB_RTAB,
            HtbAttr::DirectQlen(_) => TCA_HTB_DIRECT_QLEN,
            HtbAttr::Rate64(_) => TCA_HTB_RATE64,
            HtbAttr::Ceil64(_) => TCA_HTB_CEIL64,
            HtbAttr::Other(nla) => nla.kind(),
        }
    }

    fn emit_value(&self, buf: &mut [u8]) {
        match self {
            HtbAttr::Parms(o) => {
                o.rate.emit(&mut buf[0..12]);
                o.ceil.emit(&mut buf[12..24]);
                for (i, w) in [o.buffer, o.cbuffer, o.quantum, o.level, o.prio]
                    .into_iter()
                    .enumerate()
                {
                    buf[24 + 4 * i..28 + 4 * i].copy_from_slice(&w.to_ne_bytes());
                }
            }
            HtbAttr::Init(g) => {
                for (i, w) in g.words().into_iter().enumerate() {
                    buf[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
                }
            }
            HtbAttr::Ctab(t) | HtbAttr::Rtab(t) => {
                for (i, w) in t.iter().enumerate() {
                    buf[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
                }
            }
            HtbAttr::DirectQlen(v) => buf[..4].copy_from_slice(&v.to_ne_bytes()),
            HtbAttr::Rate64(v) | HtbAttr::Ceil64(v) => buf[..8].copy_from_slice(&v.to_ne_bytes()),
            HtbAttr::Other(nla) => nla.emit_value(buf),
        }
    }
}

fn words(buf: &[u8]) -> Vec<u32> {
    buf.chunks_exact(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn word(buf: &[u8], i: usize) -> u32 {
    buf.get(4 * i..4 * i + 4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .unwrap_or(0)
}

impl<'a, T: AsRef<[u8]> + ?Sized> Parseable<NlaBuffer<&'a T>> for HtbAttr {
    fn parse(nla: &NlaBuffer<&'a T>) -> Result<Self, DecodeError> {
        let v = nla.value();
        Ok(match nla.kind() {
            TCA_HTB_PARMS => {
                if v.len() < HtbOpt::LEN {
                    return Err(DecodeError::buffer_too_small(v.len(), HtbOpt::LEN));
                }
                HtbAttr::Parms(HtbOpt {
                    rate: RateSpec::parse(&v[0..12])?,
                    ceil: RateSpec::parse(&v[12..24])?,
                    buffer: word(v, 6),
                    cbuffer: word(v, 7),
                    quantum: word(v, 8),
                    level: word(v, 9),
                    prio: word(v, 10),
                })
            }
            TCA_HTB_INIT => {
                if v.len() < HtbGlob::LEN {
                    return Err(DecodeError::buffer_too_small(v.len(), HtbGlob::LEN));
                }
                HtbAttr::Init(HtbGlob {
                    version: word(v, 0),
                    rate2quantum: word(v, 1),
                    defcls: word(v, 2),
                    debug: word(v, 3),
                    direct_pkts: word(v, 4),
                })
            }
            TCA_HTB_CTAB => HtbAttr::Ctab(words(v)),
            TCA_HTB_RTAB => HtbAttr::Rtab(words(v)),
            TCA_HTB_DIRECT_QLEN => HtbAttr::DirectQlen(parse_u32(v)?),
            TCA_HTB_RATE64 => HtbAttr::Rate64(parse_u64(v)?),
            TCA_HTB_CEIL64 => HtbAttr::Ceil64(parse_u64(v)?),
            _ => HtbAttr::Other(DefaultNla::parse(nla)?),
        })
    }
}

/// tc's `tc_calc_xmittime`: the time to send `size` bytes at `rate` bytes
/// per second, in scheduler ticks, with tc's two truncations (to whole
/// microseconds, then to whole ticks).
pub fn xmittime(rate: u64, size: u32) -> u32 {
    if rate == 0 {
        return u32::MAX;
    }
    let usec = (1_000_000.0 * (f64::from(size) / rate as f64)) as u64 as u32;
    (f64::from(usec) * TICK_IN_USEC) as u64 as u32
}

/// tc's `tc_calc_rtable` for an Ethernet link without overhead or minimum
/// packet unit: fills `spec`'s cell fields and returns the 256-entry table
/// of transmission times for packets of `(i + 1) << cell_log` bytes at
/// `spec.rate` (the 32-bit rate, as tc does).
pub fn calc_rtable(spec: &mut RateSpec, mtu: u32) -> Vec<u32> {
    let mtu = if mtu == 0 { 2047 } else { mtu };
    let mut cell_log = 0u8;
    while (mtu >> cell_log) > 255 {
        cell_log += 1;
    }
    let table = (0..256u32)
        .map(|i| xmittime(u64::from(spec.rate), (i + 1) << cell_log))
        .collect();
    spec.cell_align = -1;
    spec.cell_log = cell_log;
    spec.linklayer = LINKLAYER_ETHERNET;
    table
}

/// The options of an htb class, as `tc class replace ... htb rate R ceil C`
/// sends them (rates in bytes per second).
pub fn htb_class_options(rate: u64, ceil: u64) -> Vec<HtbAttr> {
    let ceil = if ceil == 0 { rate } else { ceil };
    let mut opt = HtbOpt {
        rate: RateSpec {
            rate: u32::try_from(rate).unwrap_or(u32::MAX),
            ..RateSpec::default()
        },
        ceil: RateSpec {
            rate: u32::try_from(ceil).unwrap_or(u32::MAX),
            ..RateSpec::default()
        },
        ..HtbOpt::default()
    };
    let buffer = u32::try_from(rate / PSCHED_HZ)
        .unwrap_or(u32::MAX)
        .saturating_add(HTB_MTU);
    let cbuffer = u32::try_from(ceil / PSCHED_HZ)
        .unwrap_or(u32::MAX)
        .saturating_add(HTB_MTU);
    let rtab = calc_rtable(&mut opt.rate, HTB_MTU);
    opt.buffer = xmittime(rate, buffer);
    let ctab = calc_rtable(&mut opt.ceil, HTB_MTU);
    opt.cbuffer = xmittime(ceil, cbuffer);
    let mut attrs = Vec::with_capacity(5);
    if rate > u64::from(u32::MAX) {
        attrs.push(HtbAttr::Rate64(rate));
    }
    if ceil > u64::from(u32::MAX) {
        attrs.push(HtbAttr::Ceil64(ceil));
    }
    attrs.push(HtbAttr::Parms(opt));
    attrs.push(HtbAttr::Rtab(rtab));
    attrs.push(HtbAttr::Ctab(ctab));
    attrs
}

/// The options of aiwan's htb root qdisc (`tc qdisc replace ... htb default
/// D`).
pub fn htb_qdisc_options(default_class: Option<u16>) -> Vec<HtbAttr> {
    vec![HtbAttr::Init(HtbGlob {
        version: HTB_VERSION,
        rate2quantum: HTB_RATE2QUANTUM,
        defcls: default_class.map(u32::from).unwrap_or(0),
        ..HtbGlob::default()
    })]
}

/// `TCA_OPTIONS`.
pub const TCA_OPTIONS: u16 = 2;

/// A `TCA_OPTIONS` attribute holding htb attributes. It is built opaque
/// (the nested bytes as one value) because that is also how
/// netlink-packet-route hands back the options of kinds it does not know,
/// so one parser reads both.
pub fn htb_options_attribute(attrs: &[HtbAttr]) -> TcAttribute {
    let mut nested = vec![0; attrs.buffer_len()];
    attrs.emit(&mut nested);
    TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, nested))
}

/// The htb attributes of a kernel answer (qdisc or class), from its
/// `TCA_OPTIONS`. netlink-packet-route keeps unknown kinds' options as one
/// opaque attribute; this decodes it. Unknown htb attributes come back as
/// [`HtbAttr::Other`].
pub fn parse_htb_options(attributes: &[TcAttribute]) -> Result<Vec<HtbAttr>, DecodeError> {
    let mut out = Vec::new();
    let mut parse = |nested: &[u8]| -> Result<(), DecodeError> {
        for nla in NlasIterator::new(nested) {
            out.push(HtbAttr::parse(&nla?)?);
        }
        Ok(())
    };
    for attr in attributes {
        match attr {
            // A kernel answer: the whole TCA_OPTIONS as one opaque option.
            TcAttribute::Options(options) => {
                for option in options {
                    if let TcOption::Other(nla) = option {
                        parse(&nla_value(nla))?;
                    }
                }
            }
            // A message built by `htb_options_attribute`.
            TcAttribute::Other(nla) if nla.kind() & NLA_TYPE_MASK == TCA_OPTIONS => {
                parse(&nla_value(nla))?;
            }
            _ => {}
        }
    }
    Ok(out)
}

fn nla_value(nla: &DefaultNla) -> Vec<u8> {
    let mut value = vec![0; nla.value_len()];
    nla.emit_value(&mut value);
    value
}

fn kind_of(msg: &TcMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        TcAttribute::Kind(k) => Some(k.as_str()),
        _ => None,
    })
}

fn tc_base(ifindex: u32, handle: TcHandle, parent: TcHandle) -> TcMessage {
    let mut msg = TcMessage::default();
    msg.header.family = AddressFamily::Unspec;
    msg.header.index = i32::try_from(ifindex).unwrap_or(i32::MAX);
    msg.header.handle = handle;
    msg.header.parent = parent;
    msg
}

/// aiwan's qdisc handle, `a1:`.
pub fn qdisc_handle() -> TcHandle {
    TcHandle {
        major: QDISC_MAJOR,
        minor: 0,
    }
}

/// The handle of class `a1:<class_id>`.
pub fn class_handle(class_id: u16) -> TcHandle {
    TcHandle {
        major: QDISC_MAJOR,
        minor: class_id,
    }
}

/// `tc qdisc replace dev IF root handle a1: htb [default D]`.
pub fn qdisc_message(ifindex: u32, default_class: Option<u16>) -> TcMessage {
    let mut msg = tc_base(ifindex, qdisc_handle(), TcHandle::ROOT);
    msg.attributes.push(TcAttribute::Kind("htb".into()));
    msg.attributes
        .push(htb_options_attribute(&htb_qdisc_options(default_class)));
    msg
}

/// `tc qdisc del dev IF root handle a1:`.
pub fn qdisc_delete_message(ifindex: u32) -> TcMessage {
    tc_base(ifindex, qdisc_handle(), TcHandle::ROOT)
}

/// `tc class replace dev IF parent P classid a1:ID htb rate R ceil C`
/// (rates converted from bit/s to bytes/s), P the class `a1:<parent>` or,
/// without one, the qdisc `a1:`.
pub fn class_message(ifindex: u32, class: &ClassLimit, parent: Option<u16>) -> TcMessage {
    let parent = parent.map_or_else(qdisc_handle, class_handle);
    let mut msg = tc_base(ifindex, class_handle(class.class_id), parent);
    msg.attributes.push(TcAttribute::Kind("htb".into()));
    msg.attributes
        .push(htb_options_attribute(&htb_class_options(
            class.rate_bps / 8,
            class.ceil_bps / 8,
        )));
    msg
}

/// The parent class of a link's classes: `tc class replace dev IF parent
/// a1: classid a1:ffff htb rate L ceil L`.
pub fn parent_class_message(ifindex: u32, link_bps: u64) -> TcMessage {
    class_message(
        ifindex,
        &ClassLimit {
            class_id: PARENT_CLASS_ID,
            rate_bps: link_bps,
            ceil_bps: link_bps,
            dscp: Vec::new(),
        },
        None,
    )
}

/// `tc class del dev IF classid a1:ID`.
pub fn class_delete_message(ifindex: u32, class_id: u16) -> TcMessage {
    tc_base(ifindex, class_handle(class_id), TcHandle::UNSPEC)
}

/// The ethertype and u32 filter priority aiwan uses for a family.
pub fn filter_slot(family: Family) -> (u16, u16) {
    match family {
        Family::V4 => (ETH_P_IP, FILTER_PRIO_V4),
        Family::V6 => (ETH_P_IPV6, FILTER_PRIO_V6),
    }
}

fn filter_info(family: Family) -> u32 {
    let (protocol, prio) = filter_slot(family);
    (u32::from(prio) << 16) | u32::from(protocol.to_be())
}

/// The u32 key matching a DSCP value: the upper six bits of the IPv4 TOS
/// byte (`match ip dsfield D<<2 0xfc`) or of the IPv6 traffic class (`match
/// ip6 priority D<<2 0xfc`), both in the first 32-bit word of the header.
pub fn dscp_key(family: Family, dscp: u8) -> TcU32Key {
    let mut key = TcU32Key::default();
    let d = u32::from(dscp & 0x3f);
    match family {
        Family::V4 => {
            key.mask = 0x00fc_0000;
            key.val = d << 18;
        }
        Family::V6 => {
            key.mask = 0x0fc0_0000;
            key.val = d << 22;
        }
    }
    key
}

/// A u32 filter steering `dscp` into class `a1:<class_id>`: `tc filter add
/// dev IF parent a1: protocol ip|ipv6 prio 1|2 u32 match ... flowid
/// a1:ID` when `handle` is `None` (the kernel picks the handle), `tc filter
/// replace ... handle H ...` otherwise.
pub fn filter_message(
    ifindex: u32,
    family: Family,
    dscp: u8,
    class_id: u16,
    handle: Option<u32>,
) -> TcMessage {
    let mut msg = tc_base(ifindex, TcHandle::from(handle.unwrap_or(0)), qdisc_handle());
    msg.header.info = filter_info(family);
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![dscp_key(family, dscp)];
    msg.attributes.push(TcAttribute::Kind("u32".into()));
    msg.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::ClassId(class_handle(class_id))),
        TcOption::U32(TcFilterU32Option::Selector(sel)),
    ]));
    msg
}

/// `tc filter del dev IF parent a1: protocol P prio N handle H u32`
/// (`protocol` an ethertype in host order).
pub fn filter_delete_message(ifindex: u32, protocol: u16, prio: u16, handle: u32) -> TcMessage {
    let mut msg = tc_base(ifindex, TcHandle::from(handle), qdisc_handle());
    msg.header.info = (u32::from(prio) << 16) | u32::from(protocol.to_be());
    msg.attributes.push(TcAttribute::Kind("u32".into()));
    msg
}

/// A dump request for qdiscs (all interfaces) or, with an ifindex, for the
/// classes of one interface.
pub fn dump_message(ifindex: u32) -> TcMessage {
    tc_base(ifindex, TcHandle::UNSPEC, TcHandle::UNSPEC)
}

/// A dump request for the filters under aiwan's qdisc on one interface.
pub fn filter_dump_message(ifindex: u32) -> TcMessage {
    tc_base(ifindex, TcHandle::UNSPEC, qdisc_handle())
}

/// A qdisc read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedQdisc {
    pub ifindex: u32,
    pub handle: TcHandle,
    pub parent: TcHandle,
    pub kind: String,
    /// htb's default class, for aiwan's qdisc.
    pub default_class: Option<u16>,
}

impl ObservedQdisc {
    /// The root qdisc of an interface?
    pub fn is_root(&self) -> bool {
        self.parent == TcHandle::ROOT
    }

    /// aiwan's root qdisc?
    pub fn is_aiwan(&self) -> bool {
        self.is_root() && self.handle.major == QDISC_MAJOR && self.kind == "htb"
    }
}

/// Reads a qdisc message.
pub fn parse_qdisc(msg: &TcMessage) -> ObservedQdisc {
    let kind = kind_of(msg).unwrap_or_default().to_string();
    let default_class = if kind == "htb" {
        parse_htb_options(&msg.attributes)
            .ok()
            .and_then(|attrs| {
                attrs.into_iter().find_map(|a| match a {
                    HtbAttr::Init(g) => Some(g.defcls),
                    _ => None,
                })
            })
            .and_then(|d| u16::try_from(d).ok())
            .filter(|d| *d != 0)
    } else {
        None
    };
    ObservedQdisc {
        ifindex: u32::try_from(msg.header.index).unwrap_or(0),
        handle: msg.header.handle,
        parent: msg.header.parent,
        kind,
        default_class,
    }
}

/// A class read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedClass {
    pub ifindex: u32,
    pub handle: TcHandle,
    pub parent: TcHandle,
    pub kind: String,
    /// bit/s, for htb classes whose options parsed.
    pub rate_bps: Option<u64>,
    pub ceil_bps: Option<u64>,
}

impl ObservedClass {
    /// One of aiwan's classes: an htb class `a1:N` right under `a1:`.
    pub fn is_aiwan_class(&self) -> bool {
        self.aiwan_parent() == Some(None)
    }

    /// Where one of aiwan's htb classes `a1:N` sits: `Some(None)` right
    /// under the qdisc `a1:`, `Some(Some(P))` under the class `a1:P`;
    /// `None` for a class that is not aiwan's.
    pub fn aiwan_parent(&self) -> Option<Option<u16>> {
        if self.kind != "htb" || self.handle.major != QDISC_MAJOR || self.handle.minor == 0 {
            return None;
        }
        // htb reports a top-level class's parent as the root (ffff:ffff).
        if self.parent == qdisc_handle() || self.parent == TcHandle::ROOT {
            Some(None)
        } else if self.parent.major == QDISC_MAJOR && self.parent.minor != 0 {
            Some(Some(self.parent.minor))
        } else {
            None
        }
    }
}

/// Reads a class message; the 64-bit rates win over the 32-bit ones.
pub fn parse_class(msg: &TcMessage) -> ObservedClass {
    let kind = kind_of(msg).unwrap_or_default().to_string();
    let (mut rate, mut ceil) = (None, None);
    if kind == "htb"
        && let Ok(attrs) = parse_htb_options(&msg.attributes)
    {
        let (mut rate64, mut ceil64) = (None, None);
        for a in attrs {
            match a {
                HtbAttr::Parms(o) => {
                    rate = Some(u64::from(o.rate.rate));
                    ceil = Some(u64::from(o.ceil.rate));
                }
                HtbAttr::Rate64(r) => rate64 = Some(r),
                HtbAttr::Ceil64(c) => ceil64 = Some(c),
                _ => {}
            }
        }
        rate = rate64.or(rate);
        ceil = ceil64.or(ceil);
    }
    ObservedClass {
        ifindex: u32::try_from(msg.header.index).unwrap_or(0),
        handle: msg.header.handle,
        parent: msg.header.parent,
        kind,
        rate_bps: rate.map(|r| r.saturating_mul(8)),
        ceil_bps: ceil.map(|c| c.saturating_mul(8)),
    }
}

/// A filter read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedFilter {
    pub ifindex: u32,
    pub parent: TcHandle,
    pub prio: u16,
    /// Ethertype (host order).
    pub protocol: u16,
    pub kind: String,
    /// The u32 handle (`htid:hash:node`).
    pub handle: u32,
    /// The class it steers to.
    pub class: Option<TcHandle>,
    /// The family and DSCP it matches, when it is one of aiwan's DSCP
    /// matches.
    pub dscp: Option<(Family, u8)>,
}

impl ObservedFilter {
    /// A u32 key node (a real filter), not the hash tables and the per-prio
    /// entries the kernel also lists.
    pub fn is_key_node(&self) -> bool {
        self.kind == "u32" && self.handle & 0xfff != 0
    }

    /// What identifies the filter: ethertype, priority and handle.
    pub fn key(&self) -> (u16, u16, u32) {
        (self.protocol, self.prio, self.handle)
    }

    /// The family of aiwan's slot this filter sits in, if any.
    pub fn family(&self) -> Option<Family> {
        [Family::V4, Family::V6]
            .into_iter()
            .find(|f| filter_slot(*f) == (self.protocol, self.prio))
    }
}

/// Reads a filter message.
pub fn parse_filter(msg: &TcMessage) -> ObservedFilter {
    let kind = kind_of(msg).unwrap_or_default().to_string();
    let prio = (msg.header.info >> 16) as u16;
    let protocol = u16::from_be((msg.header.info & 0xffff) as u16);
    let mut class = None;
    let mut dscp = None;
    for attr in &msg.attributes {
        let TcAttribute::Options(options) = attr else {
            continue;
        };
        for option in options {
            match option {
                TcOption::U32(TcFilterU32Option::ClassId(c)) => class = Some(*c),
                TcOption::U32(TcFilterU32Option::Selector(sel)) => {
                    if let [key] = sel.keys.as_slice()
                        && key.off == 0
                        && key.offmask == 0
                    {
                        dscp = match (protocol, key.mask) {
                            (ETH_P_IP, 0x00fc_0000) => {
                                Some((Family::V4, (key.val >> 18) as u8 & 0x3f))
                            }
                            (ETH_P_IPV6, 0x0fc0_0000) => {
                                Some((Family::V6, (key.val >> 22) as u8 & 0x3f))
                            }
                            _ => None,
                        };
                    }
                }
                _ => {}
            }
        }
    }
    ObservedFilter {
        ifindex: u32::try_from(msg.header.index).unwrap_or(0),
        parent: msg.header.parent,
        prio,
        protocol,
        kind,
        handle: u32::from(msg.header.handle),
        class,
        dscp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::FLAGS_CREATE;
    use crate::messages::tests::{assert_bytes, parse_captured};
    use crate::messages::{FLAGS_ADD, FLAGS_DELETE, FLAGS_REPLACE};
    use netlink_packet_route::RouteNetlinkMessage;

    // The captures were taken in a scratch namespace where veth1 was
    // ifindex 3.
    const VETH1: u32 = 3;

    // tc qdisc replace dev veth1 root handle a1: htb default 30
    const TC_QDISC_REPLACE: &str = "\
        48000000240005054aa6066b0000000000000000030000000000a100ffffffff\
        0000000008000100687462001c00020018000200030000000a00000030000000\
        0000000000000000";

    // tc class replace dev veth1 parent a1: classid a1:10 htb rate 10mbit ceil 20mbit
    const TC_CLASS_10MBIT: &str = "\
        68080000280005044ba6066b0000000000000000030000001000a1000000a100\
        0000000008000100687462003c0802003000010003010000ffff0000d0121300\
        03010000ffff0000a0252600204e000010270000000000000000000000000000\
        040404005d000000bb0000002801000086010000f401000051020000af020000\
        1c0300007a030000e803000045040000a3040000100500006e050000dc050000\
        39060000970600000407000062070000d00700002d0800008b080000f8080000\
        56090000c4090000210a00007f0a0000ec0a00004a0b0000b80b0000150c0000\
        730c0000e00c00003e0d0000ac0d0000090e0000670e0000d40e0000320f0000\
        a00f0000fd0f00005b100000c81000002611000094110000f11100004f120000\
        bc1200001a13000088130000e513000043140000b01400000e1500007c150000\
        d915000037160000a41600000217000070170000cd1700002b18000098180000\
        f618000064190000c11900001f1a00008c1a0000ea1a0000581b0000b51b0000\
        131c0000801c0000de1c00004c1d0000a91d0000071e0000741e0000d21e0000\
        401f00009d1f0000fb1f000068200000c62000003421000091210000ef210000\
        5c220000ba2200002823000085230000e323000050240000ae2400001c250000\
        79250000d725000044260000a2260000102700006d270000cb27000038280000\
        962800000429000061290000bf2900002c2a00008a2a0000f82a0000552b0000\
        b32b0000202c00007e2c0000ec2c0000492d0000a72d0000142e0000722e0000\
        e02e00003d2f00009b2f00000830000066300000d4300000313100008f310000\
        fc3100005a320000c83200002533000083330000f03300004e340000bc340000\
        1935000077350000e435000042360000b03600000d3700006b370000d8370000\
        36380000a4380000013900005f390000cc3900002a3a0000983a0000f53a0000\
        533b0000c03b00001e3c00008c3c0000e93c0000473d0000b43d0000123e0000\
        803e0000dd3e00003b3f0000a83f00000640000074400000d14000002f410000\
        9c410000fa41000068420000c54200002343000090430000ee4300005c440000\
        b94400001745000084450000e245000050460000ad4600000b47000078470000\
        d647000044480000a1480000ff4800006c490000ca490000384a0000954a0000\
        f34a0000604b0000be4b00002c4c0000894c0000e74c0000544d0000b24d0000\
        204e00007d4e0000db4e0000484f0000a64f00001450000071500000cf500000\
        3c5100009a5100000852000065520000c3520000305300008e530000fc530000\
        59540000b75400002455000082550000f05500004d560000ab56000018570000\
        76570000e4570000415800009f5800000c5900006a590000d8590000355a0000\
        935a0000005b00005e5b0000cc5b0000295c0000875c0000f45c0000525d0000\
        c05d00001d5e00007b5e0000e85e0000465f0000b45f0000116000006f600000\
        dc6000003a610000a86100000562000063620000d06200002e6300009c630000\
        f9630000040403002e0000005d0000008c000000bb000000fa00000028010000\
        5701000086010000b5010000f4010000220200005102000080020000af020000\
        ee0200001c0300004b0300007a030000a9030000e80300001604000045040000\
        74040000a3040000e2040000100500003f0500006e0500009d050000dc050000\
        0a060000390600006806000097060000d6060000040700003307000062070000\
        91070000d0070000fe0700002d0800005c0800008b080000ca080000f8080000\
        270900005609000085090000c4090000f2090000210a0000500a00007f0a0000\
        be0a0000ec0a00001b0b00004a0b0000790b0000b80b0000e60b0000150c0000\
        440c0000730c0000b20c0000e00c00000f0d00003e0d00006d0d0000ac0d0000\
        da0d0000090e0000380e0000670e0000a60e0000d40e0000030f0000320f0000\
        610f0000a00f0000ce0f0000fd0f00002c1000005b1000009a100000c8100000\
        f7100000261100005511000094110000c2110000f1110000201200004f120000\
        8e120000bc120000eb1200001a1300004913000088130000b6130000e5130000\
        141400004314000082140000b0140000df1400000e1500003d1500007c150000\
        aa150000d9150000081600003716000076160000a4160000d316000002170000\
        31170000701700009e170000cd170000fc1700002b1800006a18000098180000\
        c7180000f6180000251900006419000092190000c1190000f01900001f1a0000\
        5e1a00008c1a0000bb1a0000ea1a0000191b0000581b0000861b0000b51b0000\
        e41b0000131c0000521c0000801c0000af1c0000de1c00000d1d00004c1d0000\
        7a1d0000a91d0000d81d0000071e0000461e0000741e0000a31e0000d21e0000\
        011f0000401f00006e1f00009d1f0000cc1f0000fb1f00003a20000068200000\
        97200000c6200000f5200000342100006221000091210000c0210000ef210000\
        2e2200005c2200008b220000ba220000e9220000282300005623000085230000\
        b4230000e323000022240000502400007f240000ae240000dd2400001c250000\
        4a25000079250000a8250000d7250000162600004426000073260000a2260000\
        d1260000102700003e2700006d2700009c270000cb2700000a28000038280000\
        6728000096280000c528000004290000322900006129000090290000bf290000\
        fe2900002c2a00005b2a00008a2a0000b92a0000f82a0000262b0000552b0000\
        842b0000b32b0000f22b0000202c00004f2c00007e2c0000ad2c0000ec2c0000\
        1a2d0000492d0000782d0000a72d0000e62d0000142e0000432e0000722e0000\
        a12e0000e02e00000e2f00003d2f00006c2f00009b2f0000da2f000008300000\
        373000006630000095300000d43000000231000031310000603100008f310000\
        ce310000fc310000";

    // tc class replace dev veth1 parent a1: classid a1:20 htb rate 40gbit ceil 50gbit
    const TC_CLASS_40GBIT: &str = "\
        80080000280005044ba6066b0000000000000000030000002000a1000000a100\
        000000000800010068746200540802000c00060000f2052a010000000c000700\
        806e8774010000003000010003010000ffff0000ffffffff03010000ffff0000\
        ffffffff00000000000000000000000000000000000000000404040000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000004040300\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000\
        0000000000000000000000000000000000000000000000000000000000000000";

    // tc class replace dev veth1 parent a1: classid a1:30 htb rate 1000 ceil 8000
    const TC_CLASS_1000BIT: &str = "\
        68080000280005044ba6066b0000000000000000030000003000a1000000a100\
        0000000008000100687462003c0802003000010003010000ffff00007d000000\
        03010000ffff0000e803000000c2eb0b40787d01000000000000000000000000\
        0404040040420f0080841e00c0c62d0000093d00404b4c00808d5b00c0cf6a00\
        00127a004054890080969800c0d8a700001bb700405dc600809fd500c0e1e400\
        0024f4004066030180a81201c0ea2101002d3101406f400180b14f01c0f35e01\
        00366e0140787d0180ba8c01c0fc9b01003fab014081ba0180c3c901c005d901\
        0048e801408af70180cc0602c00e1602005125024093340280d54302c0175302\
        005a6202409c710280de8002c020900200639f0240a5ae0280e7bd02c029cd02\
        006cdc0240aeeb0280f0fa02c0320a030075190340b7280380f93703c03b4703\
        007e560340c0650380027503c04484030087930340c9a203800bb203c04dc103\
        0090d00340d2df038014ef03c056fe0300990d0440db1c04801d2c04c05f3b04\
        00a24a0440e4590480266904c068780400ab870440ed9604802fa604c071b504\
        00b4c40440f6d3048038e304c07af20400bd010540ff100580412005c0832f05\
        00c63e0540084e05804a5d05c08c6c0500cf7b0540118b0580539a05c095a905\
        00d8b805401ac805805cd705c09ee60500e1f5054023050680651406c0a72306\
        00ea3206402c4206806e5106c0b0600600f36f0640357f0680778e06c0b99d06\
        00fcac06403ebc068080cb06c0c2da060005ea064047f90680890807c0cb1707\
        000e27074050360780924507c0d454070017640740597307809b8207c0dd9107\
        0020a1074062b00780a4bf07c0e6ce070029de07406bed0780adfc07c0ef0b08\
        00321b0840742a0880b63908c0f84808003b5808407d670880bf7608c0018608\
        004495084086a40880c8b308c00ac308004dd208408fe10880d1f008c0130009\
        00560f0940981e0980da2d09c01c3d09005f4c0940a15b0980e36a09c0257a09\
        0068890940aa980980eca709c02eb7090071c60940b3d50980f5e409c037f409\
        007a030a40bc120a80fe210ac040310a0083400a40c54f0a80075f0ac0496e0a\
        008c7d0a40ce8c0a80109c0ac052ab0a0095ba0a40d7c90a8019d90ac05be80a\
        009ef70a40e0060b8022160bc064250b00a7340b40e9430b802b530bc06d620b\
        00b0710b40f2800b8034900bc0769f0b00b9ae0b40fbbd0b803dcd0bc07fdc0b\
        00c2eb0b4004fb0b80460a0cc088190c00cb280c400d380c804f470cc091560c\
        00d4650c4016750c8058840cc09a930c00dda20c401fb20c8061c10cc0a3d00c\
        00e6df0c4028ef0c806afe0cc0ac0d0d00ef1c0d40312c0d80733b0dc0b54a0d\
        00f8590d403a690d807c780dc0be870d0001970d4043a60d8085b50dc0c7c40d\
        000ad40d404ce30d808ef20dc0d0010e0013110e4055200e80972f0ec0d93e0e\
        001c4e0e405e5d0e80a06c0ec0e27b0e00258b0e40679a0e80a9a90ec0ebb80e\
        002ec80e4070d70e80b2e60ec0f4f50e0037050f4079140f80bb230fc0fd320f\
        0040420f0404030048e8010090d00300d8b8050020a1070068890900b0710b00\
        f8590d0040420f00882a1100d012130018fb140060e31600a8cb1800f0b31a00\
        389c1c0080841e00c86c200010552200583d2400a0252600e80d280030f62900\
        78de2b00c0c62d0008af2f0050973100987f3300e06735002850370070383900\
        b8203b0000093d0048f13e0090d94000d8c1420020aa440068924600b07a4800\
        f8624a00404b4c0088334e00d01b50001804520060ec5300a8d45500f0bc5700\
        38a55900808d5b00c8755d00105e5f0058466100a02e6300e816650030ff6600\
        78e76800c0cf6a0008b86c0050a06e0098887000e07072002859740070417600\
        b829780000127a0048fa7b0090e27d00d8ca7f0020b38100689b8300b0838500\
        f86b870040548900883c8b00d0248d00180d8f0060f59000a8dd9200f0c59400\
        38ae960080969800c87e9a0010679c00584f9e00a037a000e81fa2003008a400\
        78f0a500c0d8a70008c1a90050a9ab009891ad00e079af002862b100704ab300\
        b832b500001bb7004803b90090ebba00d8d3bc0020bcbe0068a4c000b08cc200\
        f874c400405dc6008845c800d02dca001816cc0060fecd00a8e6cf00f0ced100\
        38b7d300809fd500c887d7001070d9005858db00a040dd00e828df003011e100\
        78f9e200c0e1e40008cae60050b2e800989aea00e082ec00286bee007053f000\
        b83bf2000024f400480cf60090f4f700d8dcf90020c5fb0068adfd00b095ff00\
        f87d010140660301884e0501d0360701181f090160070b01a8ef0c01f0d70e01\
        38c0100180a81201c89014011079160158611801a0491a01e8311c01301a1e01\
        78022001c0ea210108d3230150bb250198a32701e08b290128742b01705c2d01\
        b8442f01002d31014815330190fd3401d8e5360120ce380168b63a01b09e3c01\
        f8863e01406f400188574201d03f44011828460160104801a8f84901f0e04b01\
        38c94d0180b14f01c899510110825301586a5501a0525701e83a590130235b01\
        780b5d01c0f35e0108dc600150c4620198ac6401e0946601287d680170656a01\
        b84d6c0100366e01481e700190067201d8ee730120d7750168bf7701b0a77901\
        f88f7b0140787d0188607f01d04881011831830160198501a8018701f0e98801\
        38d28a0180ba8c01c8a28e01108b900158739201a05b9401e8439601302c9801\
        78149a01c0fc9b0108e59d0150cd9f0198b5a101e09da3012886a501706ea701\
        b856a901003fab014827ad01900faf01d8f7b00120e0b20168c8b401b0b0b601\
        f898b8014081ba018869bc01d051be01183ac0016022c201a80ac401f0f2c501\
        38dbc70180c3c901c8abcb011094cd01587ccf01a064d101e84cd3013035d501\
        781dd701c005d90108eeda0150d6dc0198bede01e0a6e001288fe2017077e401\
        b85fe6010048e801";

    // tc filter replace dev veth1 parent a1: protocol ip prio 1 handle 800::9 u32 match ip dsfield 0x20 0xfc flowid a1:10
    const TC_FILTER_REPLACE_V4: &str = "\
        5c0000002c0005044ba6066b000000000000000003000000090000800000a100\
        08000100080001007533320030000200080001001000a1002400050001000100\
        00000000000000000000000000fc0000002000000000000000000000";

    // tc filter del dev veth1 parent a1: protocol ip prio 1 handle 800::9 u32
    const TC_FILTER_DEL_V4: &str = "\
        2c0000002d0005004ba6066b000000000000000003000000090000800000a100\
        080001000800010075333200";

    // tc class del dev veth1 classid a1:30
    const TC_CLASS_DEL: &str = "\
        24000000290005004ca6066b0000000000000000030000003000a10000000000\
        00000000";

    // tc qdisc del dev veth1 root handle a1:
    const TC_QDISC_DEL: &str = "\
        24000000250005004ca6066b0000000000000000030000000000a100ffffffff\
        00000000";

    // tc filter add dev veth1 parent a1: protocol ip prio 1 u32 match ip dsfield 0x20 0xfc flowid a1:10
    const TC_FILTER_ADD_V4: &str = "\
        5c0000002c00050685a6066b000000000000000003000000000000000000a100\
        08000100080001007533320030000200080001001000a1002400050001000100\
        00000000000000000000000000fc0000002000000000000000000000";

    // tc filter add dev veth1 parent a1: protocol ipv6 prio 2 u32 match ip6 priority 0x20 0xfc flowid a1:10
    const TC_FILTER_ADD_V6: &str = "\
        5c0000002c00050685a6066b000000000000000003000000000000000000a100\
        86dd0200080001007533320030000200080001001000a1002400050001000100\
        0000000000000000000000000fc00000020000000000000000000000";

    // tc filter replace dev veth1 parent a1: protocol ipv6 prio 2 handle 801::800 u32 match ip6 priority 0x20 0xfc flowid a1:20
    const TC_FILTER_REPLACE_V6: &str = "\
        5c0000002c00050485a6066b000000000000000003000000000810800000a100\
        86dd0200080001007533320030000200080001002000a1002400050001000100\
        0000000000000000000000000fc00000020000000000000000000000";

    // kernel answer 0 to `tc filter show dev veth1`
    const KERNEL_FILTER_PRIO: &str = "\
        340000002c00020027a8066bc45d00000000000003000000000000000000a100\
        08000100080001007533320008000b0000000000";

    // kernel answer 1 to `tc filter show dev veth1`
    const KERNEL_FILTER_HT: &str = "\
        400000002c00020027a8066bc45d00000000000003000000000000800000a100\
        08000100080001007533320008000b00000000000c0002000800040001000000";

    // kernel answer 2 to `tc filter show dev veth1`
    const KERNEL_FILTER_NODE: &str = "\
        740000002c00020027a8066bc45d00000000000003000000000800800000a100\
        08000100080001007533320008000b0000000000400002002400050001000100\
        00000000000000000000000000fc000000200000000000000000000008000200\
        00000080080001001000a10008000b0008000000";

    fn class(id: u16, rate: u64, ceil: u64) -> ClassLimit {
        ClassLimit {
            class_id: id,
            rate_bps: rate,
            ceil_bps: ceil,
            dscp: vec![],
        }
    }

    #[test]
    fn xmittime_matches_tc() {
        // 1600 bytes at 10 Mbit/s: 1280 us, 20000 ticks.
        assert_eq!(xmittime(1_250_000, 1600), 20000);
        assert_eq!(xmittime(2_500_000, 1600), 10000);
    }

    #[test]
    fn psched_constants_match_this_kernel() {
        // tc derives its tick and HZ from /proc/net/psched; the constants
        // above assume the values every kernel since 2.6.31 publishes.
        if let Ok(text) = std::fs::read_to_string("/proc/net/psched") {
            let f: Vec<u32> = text
                .split_whitespace()
                .map(|w| u32::from_str_radix(w, 16).unwrap())
                .collect();
            assert_eq!(f[..4], [1000, 64, 1_000_000, 1_000_000_000]);
        }
    }

    #[test]
    fn qdisc_matches_tc() {
        assert_bytes(
            RouteNetlinkMessage::NewQueueDiscipline(qdisc_message(VETH1, Some(0x30))),
            FLAGS_REPLACE,
            TC_QDISC_REPLACE,
        );
        assert_bytes(
            RouteNetlinkMessage::DelQueueDiscipline(qdisc_delete_message(VETH1)),
            FLAGS_DELETE,
            TC_QDISC_DEL,
        );
        let RouteNetlinkMessage::NewQueueDiscipline(msg) = parse_captured(TC_QDISC_REPLACE) else {
            panic!("not a qdisc");
        };
        let q = parse_qdisc(&msg);
        assert!(q.is_aiwan());
        assert_eq!(q.default_class, Some(0x30));
    }

    #[test]
    fn a_class_under_the_parent_differs_only_by_its_parent() {
        let c = class(0x10, 10_000_000, 20_000_000);
        let (
            RouteNetlinkMessage::NewTrafficClass(flat),
            RouteNetlinkMessage::NewTrafficClass(child),
        ) = (
            RouteNetlinkMessage::NewTrafficClass(class_message(VETH1, &c, None)),
            RouteNetlinkMessage::NewTrafficClass(class_message(VETH1, &c, Some(PARENT_CLASS_ID))),
        )
        else {
            unreachable!()
        };
        assert_eq!(child.header.parent, class_handle(PARENT_CLASS_ID));
        assert_eq!(child.attributes, flat.attributes);
        assert_eq!(
            parse_class(&child).aiwan_parent(),
            Some(Some(PARENT_CLASS_ID))
        );
        assert_eq!(parse_class(&flat).aiwan_parent(), Some(None));
        let parent = parse_class(&parent_class_message(VETH1, 40_000_000));
        assert_eq!(parent.handle, class_handle(PARENT_CLASS_ID));
        assert_eq!(parent.aiwan_parent(), Some(None));
        assert_eq!(
            (parent.rate_bps, parent.ceil_bps),
            (Some(40_000_000), Some(40_000_000))
        );
    }

    #[test]
    fn classes_match_tc() {
        for (c, captured) in [
            (class(0x10, 10_000_000, 20_000_000), TC_CLASS_10MBIT),
            (class(0x20, 40_000_000_000, 50_000_000_000), TC_CLASS_40GBIT),
            (class(0x30, 1000, 8000), TC_CLASS_1000BIT),
        ] {
            assert_bytes(
                RouteNetlinkMessage::NewTrafficClass(class_message(VETH1, &c, None)),
                FLAGS_CREATE,
                captured,
            );
            let RouteNetlinkMessage::NewTrafficClass(msg) = parse_captured(captured) else {
                panic!("not a class");
            };
            let observed = parse_class(&msg);
            assert!(observed.is_aiwan_class());
            assert_eq!(observed.handle.minor, c.class_id);
            assert_eq!(observed.rate_bps, Some(c.rate_bps));
            assert_eq!(observed.ceil_bps, Some(c.ceil_bps));
        }
        assert_bytes(
            RouteNetlinkMessage::DelTrafficClass(class_delete_message(VETH1, 0x30)),
            FLAGS_DELETE,
            TC_CLASS_DEL,
        );
    }

    #[test]
    fn filters_match_tc() {
        assert_bytes(
            RouteNetlinkMessage::NewTrafficFilter(filter_message(VETH1, Family::V4, 8, 0x10, None)),
            FLAGS_ADD,
            TC_FILTER_ADD_V4,
        );
        assert_bytes(
            RouteNetlinkMessage::NewTrafficFilter(filter_message(VETH1, Family::V6, 8, 0x10, None)),
            FLAGS_ADD,
            TC_FILTER_ADD_V6,
        );
        assert_bytes(
            RouteNetlinkMessage::NewTrafficFilter(filter_message(
                VETH1,
                Family::V4,
                8,
                0x10,
                Some(0x8000_0009),
            )),
            FLAGS_CREATE,
            TC_FILTER_REPLACE_V4,
        );
        assert_bytes(
            RouteNetlinkMessage::NewTrafficFilter(filter_message(
                VETH1,
                Family::V6,
                8,
                0x20,
                Some(0x8010_0800),
            )),
            FLAGS_CREATE,
            TC_FILTER_REPLACE_V6,
        );
        assert_bytes(
            RouteNetlinkMessage::DelTrafficFilter(filter_delete_message(
                VETH1,
                ETH_P_IP,
                FILTER_PRIO_V4,
                0x8000_0009,
            )),
            FLAGS_DELETE,
            TC_FILTER_DEL_V4,
        );
        for (captured, family) in [
            (TC_FILTER_ADD_V4, Family::V4),
            (TC_FILTER_ADD_V6, Family::V6),
        ] {
            let RouteNetlinkMessage::NewTrafficFilter(msg) = parse_captured(captured) else {
                panic!("not a filter");
            };
            let f = parse_filter(&msg);
            assert_eq!(f.dscp, Some((family, 8)));
            assert_eq!(f.class, Some(class_handle(0x10)));
            assert_eq!(f.family(), Some(family));
        }
    }

    #[test]
    fn kernel_filter_dump_parses() {
        // The kernel's answers to `tc filter show dev veth1` list the
        // per-prio entry, the hash table 800: and the key node 800::800.
        let f = |s| {
            let RouteNetlinkMessage::NewTrafficFilter(msg) = parse_captured(s) else {
                panic!("not a filter");
            };
            parse_filter(&msg)
        };
        assert!(!f(KERNEL_FILTER_PRIO).is_key_node());
        assert!(!f(KERNEL_FILTER_HT).is_key_node());
        let node = f(KERNEL_FILTER_NODE);
        assert!(node.is_key_node());
        assert_eq!(node.handle, 0x8000_0800);
        assert_eq!(node.dscp, Some((Family::V4, 8)));
        assert_eq!(node.class, Some(class_handle(0x10)));
    }

    #[test]
    fn unknown_htb_attributes_do_not_fail() {
        let mut msg = qdisc_message(VETH1, None);
        let mut attrs = htb_qdisc_options(None);
        attrs.push(HtbAttr::Other(DefaultNla::new(42, vec![1, 2, 3, 4])));
        msg.attributes[1] = htb_options_attribute(&attrs);
        let attrs = parse_htb_options(&msg.attributes).unwrap();
        assert_eq!(attrs.len(), 2);
        assert_eq!(parse_qdisc(&msg).default_class, None);
    }
}
