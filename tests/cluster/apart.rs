//! Members apart: each member in a network namespace of its own, on two networks bridged in a
//! namespace of their own, so that a link can be cut. On the clients' network the test (through
//! a link from its own namespace) reaches every member's client port; on the members' network
//! they reach each other's consensus port. Cutting a member's port on the members' bridge cuts
//! it off from the consensus both ways, while its clients still reach it. Needs `ip`
//! (iproute2) and root; everything is removed when dropped.

use std::net::Ipv4Addr;
use std::process::Command;

/// Networks and namespaces for `n` members.
pub(super) struct Apart {
    /// Prefix of every namespace and of the test's own link.
    prefix: String,
    /// The second octet of both networks' addresses (`10.S.1.0/24` for clients, `10.S.2.0/24`
    /// for members): one no other test's link on this machine uses (see [`free_octet`]).
    octet: u8,
    n: usize,
}

/// Runs `ip args` and panics, saying so, unless it succeeds.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (needs iproute2 and root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A second octet for `10.S.1.100`, the test's own address, that no link of this machine has
/// yet, starting from one drawn from the process id (other test processes, other checkouts).
fn free_octet(pid: u32) -> u8 {
    let out = Command::new("ip").args(["-o", "-4", "addr", "show"]).output().expect("run ip (iproute2)");
    let taken = String::from_utf8_lossy(&out.stdout).into_owned();
    (0..150u32)
        .map(|k| 100 + ((pid + k) % 150) as u8)
        .find(|s| !taken.contains(&format!(" 10.{s}.1.100/")))
        .expect("a free 10.S.1.0/24")
}

impl Apart {
    pub fn new(n: usize) -> Apart {
        let pid = std::process::id();
        let apart = Apart { prefix: format!("rl{}", pid % 100_000), octet: free_octet(pid), n };
        let (sw, s) = (apart.switch(), apart.octet);
        ip(&["netns", "add", &sw]);
        for bridge in ["brc", "brp"] {
            ip(&["-n", &sw, "link", "add", bridge, "type", "bridge"]);
            ip(&["-n", &sw, "link", "set", bridge, "up"]);
        }
        // The test's own link to the clients' network.
        let host = format!("{}h", apart.prefix);
        ip(&["link", "add", &host, "type", "veth", "peer", "name", "host", "netns", &sw]);
        ip(&["-n", &sw, "link", "set", "host", "master", "brc", "up"]);
        ip(&["addr", "add", &format!("10.{s}.1.100/24"), "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        for i in 0..n {
            let ns = apart.member(i);
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            for (net, bridge, port) in [(1, "brc", format!("c{i}")), (2, "brp", format!("p{i}"))] {
                let dev = format!("net{net}");
                ip(&["-n", &ns, "link", "add", &dev, "type", "veth", "peer", "name", &port, "netns", &sw]);
                ip(&["-n", &ns, "addr", "add", &format!("10.{s}.{net}.{}/24", i + 1), "dev", &dev]);
                ip(&["-n", &ns, "link", "set", &dev, "up"]);
                ip(&["-n", &sw, "link", "set", &port, "master", bridge, "up"]);
            }
        }
        apart
    }

    fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    /// Member `i`'s namespace.
    pub fn member(&self, i: usize) -> String {
        format!("{}m{i}", self.prefix)
    }

    /// Member `i`'s address on the clients' network.
    pub fn client_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, 1, i as u8 + 1)
    }

    /// Member `i`'s address on the members' network.
    pub fn peer_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.octet, 2, i as u8 + 1)
    }

    /// Cuts member `i` off from the others (its clients still reach it).
    pub fn cut(&self, i: usize) {
        ip(&["-n", &self.switch(), "link", "set", &format!("p{i}"), "down"]);
    }

    /// Joins member `i` to the others again.
    pub fn heal(&self, i: usize) {
        ip(&["-n", &self.switch(), "link", "set", &format!("p{i}"), "up"]);
    }
}

impl Drop for Apart {
    fn drop(&mut self) {
        // Deleting a namespace deletes its ends of the links, and so the links.
        for i in 0..self.n {
            let _ = Command::new("ip").args(["netns", "del", &self.member(i)]).output();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.switch()]).output();
        let _ = Command::new("ip").args(["link", "del", &format!("{}h", self.prefix)]).output();
    }
}
