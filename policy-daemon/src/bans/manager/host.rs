//! The host's own addresses, for `ban.ignore_self`.

use std::net::IpAddr;

use ipnet::IpNet;

/// The addresses configured on this host's interfaces.
pub fn host_addresses() -> Vec<IpNet> {
    let mut out = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below.
    if unsafe { libc::getifaddrs(&raw mut list) } != 0 {
        return out;
    }
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned.
        let node = unsafe { &*cursor };
        if !node.ifa_addr.is_null() {
            // SAFETY: ifa_addr points at a sockaddr of the family it names.
            let family = i32::from(unsafe { (*node.ifa_addr).sa_family });
            let addr = match family {
                libc::AF_INET => {
                    // SAFETY: family AF_INET means the kernel wrote a whole,
                    // suitably aligned sockaddr_in there.
                    #[expect(
                        clippy::cast_ptr_alignment,
                        reason = "getifaddrs allocates each address for its family"
                    )]
                    let sin = unsafe { &*node.ifa_addr.cast::<libc::sockaddr_in>() };
                    Some(IpAddr::from(
                        u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                    ))
                }
                libc::AF_INET6 => {
                    // SAFETY: as above, for sockaddr_in6.
                    #[expect(
                        clippy::cast_ptr_alignment,
                        reason = "getifaddrs allocates each address for its family"
                    )]
                    let sin6 = unsafe { &*node.ifa_addr.cast::<libc::sockaddr_in6>() };
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            };
            if let Some(addr) = addr
                && !out.contains(&IpNet::from(addr))
            {
                out.push(IpNet::from(addr));
            }
        }
        cursor = node.ifa_next;
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    out
}
