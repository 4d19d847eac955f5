//! Socket activation (sd_listen_fds(3)): the sockets systemd bound for
//! nusad, told apart by the names `FileDescriptorName=` gives them in
//! `nusad.socket`.
//!
//! A socket systemd bound stays open while nusad restarts, so connections
//! that arrive in between wait in the kernel's queue instead of being
//! refused, and nusad needs no privilege to listen on any port.

use std::net::{TcpListener, UdpSocket};

use listenfd::ListenFd;

/// `FileDescriptorName=` of the TCP listener for HTTPS (HTTP/1.1, HTTP/2).
pub const HTTPS: &str = "https";
/// `FileDescriptorName=` of the UDP socket for QUIC (HTTP/3).
pub const QUIC: &str = "quic";
/// `FileDescriptorName=` of the TCP listener for Prometheus metrics.
pub const METRICS: &str = "metrics";

/// Passed descriptors start here (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// The sockets passed to nusad. One that is absent is bound from the config
/// as usual.
#[derive(Debug, Default)]
pub struct Activated {
    pub https: Option<TcpListener>,
    pub quic: Option<UdpSocket>,
    pub metrics: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("socket activation: LISTEN_FDNAMES has {names} names for LISTEN_FDS={fds}")]
    NameCount { names: usize, fds: usize },
    #[error(
        "socket activation: fd {fd} is named '{name}'; nusad takes '{HTTPS}' (TCP), \
         '{QUIC}' (UDP) and '{METRICS}' (TCP)"
    )]
    UnknownName { fd: i32, name: String },
    #[error("socket activation: fd {fd} ('{role}') must be a {expected}: {source}")]
    WrongType {
        fd: i32,
        role: &'static str,
        expected: &'static str,
        source: std::io::Error,
    },
    #[error(
        "socket activation: fd {fd} has no name nusad knows and is neither a TCP nor a UDP \
         socket"
    )]
    Unusable { fd: i32 },
    #[error("socket activation: fds {first} and {second} are both '{role}'")]
    Duplicate {
        role: &'static str,
        first: i32,
        second: i32,
    },
}

/// What a passed descriptor is for, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Https,
    Quic,
    Metrics,
    /// Unnamed: a TCP listener serves HTTPS, a UDP socket QUIC.
    ByType,
}

impl Activated {
    /// Takes the sockets systemd passed (`LISTEN_FDS`, `LISTEN_PID`,
    /// `LISTEN_FDNAMES`); none when nusad was not socket-activated.
    ///
    /// Call it before any thread starts: `listenfd` removes `LISTEN_FDS` and
    /// `LISTEN_PID` from the environment (so that no child inherits them),
    /// which is only sound while the process has one thread.
    ///
    /// Each descriptor's type and family are checked against its name; a
    /// mismatch is an error naming the descriptor. Descriptors without a
    /// name of ours (systemd names them `unknown`, or after the socket unit,
    /// when `FileDescriptorName=` is unset) are taken by type: TCP for
    /// HTTPS, UDP for QUIC. The metrics listener is only taken by name.
    pub fn from_env() -> Result<Activated, ActivationError> {
        let announced = std::env::var("LISTEN_FDS").ok();
        let names = std::env::var("LISTEN_FDNAMES").ok();
        let mut fds = ListenFd::from_env();
        if fds.len() == 0 && announced.as_deref().is_some_and(|n| n != "0") {
            tracing::warn!(
                "LISTEN_FDS is set but LISTEN_PID names another process: \
                 binding the configured addresses"
            );
        }
        let roles = roles(fds.len(), names.as_deref())?;
        let mut https = None;
        let mut quic = None;
        let mut metrics = None;
        for (idx, role) in roles.into_iter().enumerate() {
            let fd = FIRST_FD + idx as i32;
            match role {
                Role::Https => put(&mut https, fd, HTTPS, tcp(&mut fds, idx, HTTPS)?)?,
                Role::Quic => put(&mut quic, fd, QUIC, udp(&mut fds, idx)?)?,
                Role::Metrics => put(&mut metrics, fd, METRICS, tcp(&mut fds, idx, METRICS)?)?,
                Role::ByType => {
                    // listenfd leaves a descriptor in place when its type
                    // does not match, so the second try sees it.
                    if let Ok(Some(l)) = fds.take_tcp_listener(idx) {
                        put(&mut https, fd, HTTPS, l)?;
                    } else if let Ok(Some(s)) = fds.take_udp_socket(idx) {
                        put(&mut quic, fd, QUIC, s)?;
                    } else {
                        return Err(ActivationError::Unusable { fd });
                    }
                }
            }
        }
        Ok(Activated {
            https: https.map(|(_, s)| s),
            quic: quic.map(|(_, s)| s),
            metrics: metrics.map(|(_, s)| s),
        })
    }

    /// Whether any socket was passed.
    pub fn any(&self) -> bool {
        self.https.is_some() || self.quic.is_some() || self.metrics.is_some()
    }
}

/// The role of each of `count` descriptors, from `LISTEN_FDNAMES`.
fn roles(count: usize, names: Option<&str>) -> Result<Vec<Role>, ActivationError> {
    let Some(names) = names.filter(|_| count > 0) else {
        return Ok(vec![Role::ByType; count]);
    };
    let names: Vec<&str> = names.split(':').collect();
    if names.len() != count {
        return Err(ActivationError::NameCount {
            names: names.len(),
            fds: count,
        });
    }
    names
        .into_iter()
        .enumerate()
        .map(|(idx, name)| match name {
            HTTPS => Ok(Role::Https),
            QUIC => Ok(Role::Quic),
            METRICS => Ok(Role::Metrics),
            // systemd's defaults when FileDescriptorName= is unset.
            "" | "unknown" => Ok(Role::ByType),
            _ if name.ends_with(".socket") => Ok(Role::ByType),
            _ => Err(ActivationError::UnknownName {
                fd: FIRST_FD + idx as i32,
                name: name.to_string(),
            }),
        })
        .collect()
}

fn tcp(fds: &mut ListenFd, idx: usize, role: &'static str) -> Result<TcpListener, ActivationError> {
    let fd = FIRST_FD + idx as i32;
    fds.take_tcp_listener(idx)
        .map_err(|source| ActivationError::WrongType {
            fd,
            role,
            expected: "TCP socket (ListenStream=)",
            source,
        })?
        .ok_or(ActivationError::Unusable { fd })
}

fn udp(fds: &mut ListenFd, idx: usize) -> Result<UdpSocket, ActivationError> {
    let fd = FIRST_FD + idx as i32;
    fds.take_udp_socket(idx)
        .map_err(|source| ActivationError::WrongType {
            fd,
            role: QUIC,
            expected: "UDP socket (ListenDatagram=)",
            source,
        })?
        .ok_or(ActivationError::Unusable { fd })
}

/// Fills a role once; a second descriptor for it is an error.
fn put<T>(
    slot: &mut Option<(i32, T)>,
    fd: i32,
    role: &'static str,
    socket: T,
) -> Result<(), ActivationError> {
    if let Some((first, _)) = slot {
        return Err(ActivationError::Duplicate {
            role,
            first: *first,
            second: fd,
        });
    }
    *slot = Some((fd, socket));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_roles_in_order() {
        let r = roles(3, Some("quic:metrics:https")).unwrap();
        assert_eq!(r, [Role::Quic, Role::Metrics, Role::Https]);
    }

    #[test]
    fn no_names_means_by_type() {
        assert_eq!(roles(2, None).unwrap(), [Role::ByType, Role::ByType]);
        assert!(roles(0, None).unwrap().is_empty());
        // An empty LISTEN_FDNAMES with no descriptors is not a count mismatch.
        assert!(roles(0, Some("")).unwrap().is_empty());
    }

    #[test]
    fn systemd_default_names_mean_by_type() {
        let r = roles(3, Some("unknown:nusad.socket:")).unwrap();
        assert_eq!(r, [Role::ByType; 3]);
    }

    #[test]
    fn unknown_name_is_named_with_its_fd() {
        let e = roles(2, Some("https:http3")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("fd 4") && msg.contains("'http3'"), "{msg}");
    }

    #[test]
    fn name_count_must_match() {
        let e = roles(2, Some("https")).unwrap_err();
        assert!(
            matches!(e, ActivationError::NameCount { names: 1, fds: 2 }),
            "{e}"
        );
    }

    #[test]
    fn second_socket_for_a_role_is_refused() {
        let mut slot = None;
        put(&mut slot, 3, HTTPS, ()).unwrap();
        let e = put(&mut slot, 5, HTTPS, ()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "socket activation: fds 3 and 5 are both 'https'"
        );
    }
}
