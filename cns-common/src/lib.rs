//! Map layouts shared by the cns kernel programs (`cns-ebpf`) and the agent (`cns-agent`).
//!
//! Start here to learn what the datapath knows: every map the programs use has its name,
//! key, value and capacity in this crate, written once. Keys and values are `#[repr(C)]`
//! with explicit padding (bytemuck's derives prove there is none hidden) and integer flags.
//!
//! Byte order: IPv4 addresses are stored as the packet carries them (network order, read
//! as a native `u32` with `u32::from_ne_bytes(octets)`), IPv6 ones as their 16 bytes; ports in keys are network order
//! too. LPM trie keys are compared bit by bit from the first byte, so every field of an LPM
//! key is big-endian. The agent's `encode` module is the one place that builds these keys
//! for the agent; `keys` builds the few the programs hash on every packet, a word at a time.
#![no_std]

/// Little-endian only (the programs' target, bpfel): not built for big-endian hosts.
#[cfg(target_endian = "little")]
pub mod keys;
pub mod maps;

/// Version of the map layouts in [`maps`]. Maps are pinned in a directory named after it
/// (`maps-v{LAYOUT_VERSION}`, plus a hash of the sizes when the agent runs with other than
/// the default capacities): an agent with a new layout (or new sizes) builds fresh maps
/// beside the old ones, fills them, then swaps its programs in atomically (no gap), and
/// removes the old directory. Bump it whenever a key, value, default capacity or map type
/// changes; the fingerprint test in `maps` fails until you do.
pub const LAYOUT_VERSION: u32 = 10;

/// Direction of traffic, seen from the local pod (endpoint).
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;

/// Verdicts, as counted and reported.
pub const VERDICT_FORWARDED: u8 = 0;
pub const VERDICT_DROPPED: u8 = 1;
/// A would-be drop that passed because the endpoint is in audit mode.
pub const VERDICT_AUDIT: u8 = 2;

/// Why a verdict was reached (in events and conntrack entries).
pub const REASON_POLICY_ALLOWED: u8 = 0;
pub const REASON_POLICY_DENIED: u8 = 1;
pub const REASON_NOT_ISOLATED: u8 = 2;
pub const REASON_FROM_HOST: u8 = 3;
pub const REASON_ESTABLISHED: u8 = 4;
pub const REASON_REPLY: u8 = 5;
/// An IPv6 packet whose extension header chain is longer than the programs walk
/// (`cns-ebpf`'s `parse::MAX_EXT_HEADERS`): its upper-layer protocol is unknown, so an
/// isolated endpoint never accepts it. (A chain truncated inside is [`REASON_MALFORMED`].)
pub const REASON_IPV6_HEADER_CHAIN: u8 = 6;
/// A truncated or malformed IPv4 or IPv6 packet of an isolated endpoint.
pub const REASON_MALFORMED: u8 = 7;
/// A non-first fragment (no ports to check) of an isolated endpoint.
pub const REASON_FRAGMENT: u8 = 8;
/// A packet claiming a source address that is not its endpoint's (anti-spoofing).
pub const REASON_SPOOFED: u8 = 9;
/// Neither IPv4, IPv6 nor ARP (e.g. VLAN-tagged) from or to an isolated endpoint.
pub const REASON_UNSUPPORTED_L3: u8 = 10;
/// An ICMP error about a tracked connection (e.g. "fragmentation needed").
pub const REASON_RELATED: u8 = 11;
/// The programs are attached to an interface the endpoint map does not know (its entry
/// could not be written, e.g. the map is full): fail closed in blocking mode.
pub const REASON_NO_ENDPOINT: u8 = 12;
/// Denied by an Admin-tier ClusterNetworkPolicy rule (the policy id names it).
pub const REASON_ADMIN_DENIED: u8 = 13;
/// Denied by a Baseline-tier ClusterNetworkPolicy rule (the policy id names it).
pub const REASON_BASELINE_DENIED: u8 = 14;

/// Reserved identities. Pod identities (namespace + labels) start at [`IDENTITY_FIRST_POD`].
pub const IDENTITY_UNKNOWN: u32 = 0;
/// Any address of the node itself.
pub const IDENTITY_HOST: u32 = 1;
/// Anything outside the cluster (not in the IP cache).
pub const IDENTITY_WORLD: u32 = 2;
pub const IDENTITY_FIRST_POD: u32 = 256;
/// Identities of whole namespaces in policy keys: `IDENTITY_NAMESPACE_BASE | ns_id` (the
/// remote's namespace from the IP cache). ClusterNetworkPolicy peers that select every pod
/// of some namespaces are one entry per namespace, not one per pod identity. Pod identities
/// stay below it.
pub const IDENTITY_NAMESPACE_BASE: u32 = 0x4000_0000;
/// Identities of "the set of ipBlocks this address falls in", local to one endpoint and
/// direction, found in [`maps::CIDRS`]; they never collide with pod identities.
pub const IDENTITY_CIDR_BASE: u32 = 0x8000_0000;

/// Reserved namespace ids for the counters. Real namespaces start at [`NS_FIRST`].
pub const NS_UNKNOWN: u16 = 0;
pub const NS_HOST: u16 = 1;
pub const NS_WORLD: u16 = 2;
pub const NS_FIRST: u16 = 16;

/// Protocol numbers used in keys. A policy key with protocol [`PROTO_ANY`] and prefix
/// [`maps::POLICY_PREFIX_ANY_PROTO`] matches every protocol and port.
pub const PROTO_ANY: u8 = 0;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;
pub const PROTO_ICMPV6: u8 = 58;
