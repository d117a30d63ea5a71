//! systemd's readiness protocol (`sd_notify`), without libsystemd: a datagram to
//! `$NOTIFY_SOCKET` saying `READY=1`, `STOPPING=1` or `WATCHDOG=1`. Outside systemd (no
//! `$NOTIFY_SOCKET`) every call does nothing.

use std::ffi::OsStr;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends one notification to `$NOTIFY_SOCKET`, if set; errors are logged, never fatal.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET")
        && let Err(e) = notify_to(&path, state)
    {
        log::warn!("cannot notify systemd ({state}): {e}");
    }
}

/// Sends `state` to the socket `path` (`@name` is an abstract socket).
pub fn notify_to(path: &OsStr, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match path.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when systemd asks for it.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!("hookflow-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("hookflow-test-{}", std::process::id());
        let abs = UnixDatagram::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        abs.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
