//! The embedded DNS server of each network (127.0.0.11 inside containers).

use super::*;

impl Networks {
    pub(super) fn start_dns(&self, st: &mut NetState) {
        if st.net.is_default() || st.dns_task.is_some() {
            return;
        }
        let addr = SocketAddr::from((st.net.gateway, 53));
        match std::net::UdpSocket::bind(addr).and_then(|s| {
            s.set_nonblocking(true)?;
            tokio::net::UdpSocket::from_std(s)
        }) {
            Ok(sock) => {
                // TCP beside UDP, for answers too large for a datagram.
                let tcp = std::net::TcpListener::bind(addr)
                    .and_then(|l| {
                        l.set_nonblocking(true)?;
                        tokio::net::TcpListener::from_std(l)
                    })
                    .map_err(|e| {
                        tracing::warn!(addr = %addr, error = %e, "embedded DNS: no TCP listener")
                    })
                    .ok();
                st.dns_task = Some(tokio::spawn(dns::serve(
                    sock,
                    tcp,
                    self.dns.clone(),
                    st.net.id.clone(),
                )))
            }
            Err(e) => tracing::warn!(addr = %addr, error = %e, "embedded DNS could not bind"),
        }
    }
}
