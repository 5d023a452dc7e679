//! An mtpolicyd regex on `client_address` turned into the IPv4 prefixes
//! it matches.
//!
//! mtpolicyd 2.05 has no CIDR list plugin: allow lists are `Condition`
//! plugins with `re_match` on the client address, such as
//! `^192\.0\.2\.([0-9]|[1-5][0-9]|6[0-3])$`. The regex is compiled to a
//! DFA and walked octet by octet over every dotted IPv4 address, as
//! Postfix writes them, with Perl's unanchored `=~` semantics; the walk is
//! memoised on the DFA state, so it costs the DFA's states times 256 per
//! octet, not 2³² matches. Runs of matching octets become the largest
//! aligned prefixes.

use std::{collections::HashMap, net::Ipv4Addr, rc::Rc};

use ipnet::Ipv4Net;
use regex_automata::{
    Anchored,
    dfa::{Automaton, dense},
    util::{primitives::StateID, start},
};

/// Most prefixes a regex may stand for; past it the list is not
/// converted (an address-by-address regex is not an allow list).
pub const MAX_PREFIXES: usize = 4096;
/// Largest DFA built for one regex.
const DFA_SIZE_LIMIT: usize = 8 << 20;

/// The addresses that continue a prefix: every one, none, or per next
/// octet.
enum Node {
    All,
    Empty,
    Octets(Vec<Rc<Node>>),
}

/// The IPv4 prefixes whose dotted addresses `pattern` matches, smallest
/// list first.
///
/// # Errors
/// A regex the DFA engine cannot build (e.g. Perl's lookarounds), one too
/// large, or one matching more than [`MAX_PREFIXES`] prefixes.
pub fn prefixes(pattern: &str) -> Result<Vec<Ipv4Net>, String> {
    let dfa = dense::Builder::new()
        .configure(
            dense::Config::new()
                .dfa_size_limit(Some(DFA_SIZE_LIMIT))
                .determinize_size_limit(Some(DFA_SIZE_LIMIT)),
        )
        .build(pattern)
        .map_err(|e| format!("the regex cannot be read as IPv4 prefixes: {e}"))?;
    let start = dfa
        .start_state(&start::Config::new().anchored(Anchored::No))
        .map_err(|e| format!("the regex cannot be read as IPv4 prefixes: {e}"))?;
    let mut walk = Walk {
        dfa: &dfa,
        memo: HashMap::new(),
    };
    let root = walk.node(start, 0, false);
    let mut out = Vec::new();
    emit(&root, 0, 0, &mut out)?;
    Ok(out)
}

struct Walk<'a> {
    dfa: &'a dense::DFA<Vec<u32>>,
    memo: HashMap<(StateID, u8, bool), Rc<Node>>,
}

impl Walk<'_> {
    /// What follows after `octet` octets were fed, in `state`; `matched`:
    /// a match was already seen (unanchored: the rest cannot undo it).
    fn node(&mut self, state: StateID, octet: u8, matched: bool) -> Rc<Node> {
        if matched {
            return Rc::new(Node::All);
        }
        if self.dfa.is_dead_state(state) {
            return Rc::new(Node::Empty);
        }
        if let Some(node) = self.memo.get(&(state, octet, matched)) {
            return Rc::clone(node);
        }
        let mut children = Vec::with_capacity(256);
        for value in 0..=255u8 {
            let mut next = state;
            let mut seen = false;
            let text = value.to_string();
            let tail: &[u8] = if octet < 3 { b"." } else { b"" };
            for byte in text.bytes().chain(tail.iter().copied()) {
                next = self.dfa.next_state(next, byte);
                seen |= self.dfa.is_match_state(next);
            }
            let child = if octet < 3 {
                self.node(next, octet + 1, seen)
            } else {
                let end = self.dfa.next_eoi_state(next);
                Rc::new(if seen || self.dfa.is_match_state(end) {
                    Node::All
                } else {
                    Node::Empty
                })
            };
            children.push(child);
        }
        let node = Rc::new(if children.iter().all(|c| matches!(**c, Node::All)) {
            Node::All
        } else if children.iter().all(|c| matches!(**c, Node::Empty)) {
            Node::Empty
        } else {
            Node::Octets(children)
        });
        self.memo.insert((state, octet, matched), Rc::clone(&node));
        node
    }
}

/// Appends the prefixes of `node`, which stands for the addresses with
/// the first `depth` octets of `base`.
fn emit(node: &Node, base: u32, depth: u8, out: &mut Vec<Ipv4Net>) -> Result<(), String> {
    let children = match node {
        Node::Empty => return Ok(()),
        Node::All => return push(out, base, depth * 8),
        Node::Octets(children) => children,
    };
    let shift = 24 - u32::from(depth) * 8;
    let mut value = 0usize;
    while value < 256 {
        if matches!(*children[value], Node::All) {
            // The largest aligned run of whole octets from `value`.
            let mut size = 1usize;
            while value.is_multiple_of(size * 2)
                && value + size * 2 <= 256
                && children[value..value + size * 2]
                    .iter()
                    .all(|c| matches!(**c, Node::All))
            {
                size *= 2;
            }
            let bits = u8::try_from(size.trailing_zeros()).unwrap_or(0);
            let octet = u32::try_from(value).unwrap_or(0);
            push(out, base | (octet << shift), depth * 8 + 8 - bits)?;
            value += size;
        } else {
            let octet = u32::try_from(value).unwrap_or(0);
            emit(&children[value], base | (octet << shift), depth + 1, out)?;
            value += 1;
        }
    }
    Ok(())
}

fn push(out: &mut Vec<Ipv4Net>, base: u32, len: u8) -> Result<(), String> {
    if out.len() >= MAX_PREFIXES {
        return Err(format!(
            "the regex matches addresses scattered over more than {MAX_PREFIXES} prefixes"
        ));
    }
    let net = Ipv4Net::new(Ipv4Addr::from(base), len).map_err(|e| format!("prefix /{len}: {e}"))?;
    out.push(net.trunc());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(pattern: &str) -> Vec<String> {
        prefixes(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn ranges_become_aligned_prefixes() {
        assert_eq!(
            text(r"^(192\.0\.2\.([0-9]|[1-5][0-9]|6[0-3])|198\.51\.100\.([0-9]|1[0-5]))$"),
            ["192.0.2.0/26", "198.51.100.0/28"]
        );
        assert_eq!(text(r"^192\.0\.2\.50$"), ["192.0.2.50/32"]);
        assert_eq!(text(r"^10\."), ["10.0.0.0/8"]);
        assert_eq!(text(r"^198\.51\.100\.[0-9]+$"), ["198.51.100.0/24"]);
        assert!(text(r"^2001:db8:").is_empty(), "IPv6 only");
    }

    #[test]
    fn unanchored_regexes_match_as_perl_does() {
        // `=~ /192\.168\./` also matches 10.192.168.7.
        let nets = text(r"192\.168\.");
        assert!(nets.contains(&"192.168.0.0/16".to_owned()), "{nets:?}");
        assert!(nets.contains(&"10.192.168.0/24".to_owned()), "{nets:?}");
    }

    #[test]
    fn scattered_or_unreadable_regexes_are_refused() {
        assert!(prefixes(r"[02468]$").is_err(), "every even address");
        assert!(prefixes(r"^(?=10)").is_err(), "lookahead");
        assert!(prefixes(r"(").is_err());
    }
}
