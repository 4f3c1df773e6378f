//! Network namespaces by name (`ip netns`): run code inside one, create one that is
//! deleted again when its guard drops.
//!
//! [`run_in`] enters a namespace on a short-lived thread of its own (a network namespace
//! belongs to a thread), so sockets and devices created there live in that namespace
//! while the rest of the process stays where it was. A socket keeps its namespace after
//! the thread ends: bind a listener in namespace B, then accept on any thread.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether the process runs as root (namespaces, TUN devices and addresses need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Where namespace `name` is: `/run/netns/NAME` (what `ip netns add` creates), or `name`
/// itself when it is an absolute path (e.g. `/proc/PID/ns/net`).
pub fn path(name: &str) -> PathBuf {
    if name.starts_with('/') {
        PathBuf::from(name)
    } else {
        Path::new("/run/netns").join(name)
    }
}

/// Move the calling thread into network namespace `name`.
fn enter(name: &str) -> io::Result<()> {
    let file = File::open(path(name)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("network namespace {name:?} ({}): {e}", path(name).display()),
        )
    })?;
    // SAFETY: plain syscall on a valid file descriptor that outlives the call.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("setns into {name:?}: {e}"),
        ));
    }
    Ok(())
}

/// Run `f` on a thread inside network namespace `name` and return its result. What `f`
/// creates (sockets, TUN devices) stays in that namespace.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(name)?;
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other(format!("thread in {name:?} panicked"))))
    })
}

/// Run a setup command; an error carries its output.
pub fn command(args: &[&str]) -> io::Result<()> {
    let (program, rest) = args
        .split_first()
        .ok_or_else(|| io::Error::other("empty command"))?;
    let out = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "`{}` exited with {}: {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )))
}

/// A network namespace this process created. Dropping it kills every process left in it
/// and deletes it, which also removes its devices (and ends the emulator's TUN devices
/// there).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create namespace `name` (replacing a leftover of the same name) with loopback up
    /// and IPv6 off, so that no router solicitation or link-local chatter appears on its
    /// links.
    pub fn create(name: &str) -> io::Result<Self> {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        command(&["ip", "netns", "add", name])?;
        let ns = Self {
            name: name.to_string(),
        };
        command(&["ip", "-n", name, "link", "set", "lo", "up"])?;
        ns.run(|| {
            for f in [
                "/proc/sys/net/ipv6/conf/all/disable_ipv6",
                "/proc/sys/net/ipv6/conf/default/disable_ipv6",
            ] {
                // Absent when the kernel has no IPv6: nothing to turn off then.
                let _ = std::fs::write(f, "1");
            }
            Ok(())
        })?;
        Ok(ns)
    }

    /// Its name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `f` on a thread inside this namespace ([`run_in`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        run_in(&self.name, f)
    }

    /// `ip -n NAME ARGS…` (ARGS split at whitespace).
    pub fn ip(&self, args: &str) -> io::Result<()> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend(args.split_whitespace());
        command(&v)
    }

    /// Set a sysctl inside this namespace, e.g. `net/ipv4/tcp_rmem`.
    pub fn write_sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let file = format!("/proc/sys/{key}");
        self.run(|| std::fs::write(&file, value))
    }

    /// Read a sysctl inside this namespace.
    pub fn read_sysctl(&self, key: &str) -> io::Result<String> {
        let file = format!("/proc/sys/{key}");
        self.run(|| std::fs::read_to_string(&file).map(|s| s.trim().to_string()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<libc::pid_t>() {
                    // SAFETY: plain syscall; the pid is a process inside a namespace this
                    // process created.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Delete namespaces `PREFIX-PID…` left by processes that died without their guards'
/// `Drop` (SIGKILL), i.e. whose PID is no longer alive.
pub fn remove_stale(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let prefix = format!("{prefix}-");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name.strip_prefix(&prefix).and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_name_or_absolute() {
        assert_eq!(path("lab-a"), PathBuf::from("/run/netns/lab-a"));
        assert_eq!(path("/proc/1/ns/net"), PathBuf::from("/proc/1/ns/net"));
    }

    #[test]
    fn run_in_missing_namespace_names_it() {
        let err = run_in("peershare-wanem-no-such-namespace", || Ok(())).unwrap_err();
        assert!(err.to_string().contains("no-such-namespace"), "{err}");
    }

    #[test]
    fn command_failure_carries_output() {
        let err = command(&["sh", "-c", "echo oops >&2; exit 3"]).unwrap_err();
        assert!(err.to_string().contains("oops"), "{err}");
        assert!(command(&[]).is_err());
    }
}
