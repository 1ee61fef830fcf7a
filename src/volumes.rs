//! Named volumes (issue 13 §2): directories of the agent's own under `[volumes] root`,
//! one per service and name, bind-mounted into the component's container. They are plain
//! directories, so podman's database loss, `podman system reset` and re-applies leave them
//! as they are; only `mcp-agent remove SERVICE --volumes` deletes them.

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Makes each of `dirs` that does not exist yet: created 0700, owned by `user` (the
/// component's `user`: numeric `UID[:GID]`, or names resolved in the host's `/etc/passwd`
/// and `/etc/group`; without one, the agent's own user). A directory that exists is left
/// as it is (its contents and owner are the application's).
pub fn ensure<'a>(
    dirs: impl IntoIterator<Item = (&'a String, &'a String)>,
    user: Option<&str>,
) -> Result<(), String> {
    // Resolved whether or not a directory is to be made, so that a user the host does
    // not know is said every time, not only by the component that comes first.
    let owner = match user {
        Some(u) => Some(resolve(u).map_err(|e| format!("named volumes: {e}"))?),
        None => None,
    };
    for (name, dir) in dirs {
        let dir = Path::new(dir);
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(format!(
                    "volume {name}: {} exists and is not a directory",
                    dir.display()
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("volume {name}: {}: {e}", dir.display())),
        }
        if let Some(parent) = dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| format!("volume {name}: cannot create {}: {e}", parent.display()))?;
        }
        // Made under a temporary name and renamed, so a directory of the volume's name
        // always has its owner.
        let tmp = dir.with_extension("creating");
        let _ = std::fs::remove_dir(&tmp);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(|e| format!("volume {name}: cannot create {}: {e}", tmp.display()))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(|e| {
                let _ = std::fs::remove_dir(&tmp);
                format!(
                    "volume {name}: cannot give {} to {uid}:{gid}: {e}",
                    dir.display()
                )
            })?;
        }
        std::fs::rename(&tmp, dir)
            .map_err(|e| format!("volume {name}: cannot create {}: {e}", dir.display()))?;
        tracing::info!(volume = name, dir = %dir.display(), "named volume created");
    }
    Ok(())
}

/// `UID[:GID]` or `NAME[:GROUP]` as numeric ids of this host. A user without a group has
/// its passwd entry's group (a uid without one: group 0, as podman gives it).
pub fn resolve(user: &str) -> Result<(u32, u32), String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let entry = |field: usize, want: &str| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[field] == want).then(|| (f[2].parse().ok(), f[3].parse().ok()))
        })
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, entry(2, u).and_then(|e| e.1).unwrap_or(0)),
        Err(_) => match entry(0, u) {
            Some((Some(uid), Some(gid))) => (uid, gid),
            _ => {
                return Err(format!(
                    "user {u:?} is not a user of this host (the volume's directory is created with the component's user as owner): give it as UID:GID"
                ))
            }
        },
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
                groups
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() > 2 && f[0] == g).then(|| f[2].parse().ok()).flatten()
                    })
                    .ok_or_else(|| {
                        format!(
                            "group {g:?} is not a group of this host (the volume's directory is created with the component's user as owner): give it as UID:GID"
                        )
                    })?
            }
        },
    };
    Ok((uid, gid))
}

/// Deletes the named volumes of `service` (its directory under `root`); returns whether
/// there was one.
pub fn remove_service(root: &Path, service: &str) -> std::io::Result<bool> {
    let dir = root.join(service);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn users_resolve_to_numeric_ids_or_say_why_not() {
        assert_eq!(resolve("1000:1001"), Ok((1000, 1001)));
        assert_eq!(resolve("root"), Ok((0, 0)));
        assert_eq!(resolve("0:root"), Ok((0, 0)));
        assert_eq!(resolve("4242"), Ok((4242, 0)));
        let e = resolve("no-such-user-here").unwrap_err();
        assert!(
            e.contains("not a user of this host") && e.contains("UID:GID"),
            "{e}"
        );
        assert!(resolve("0:no-such-group")
            .unwrap_err()
            .contains("not a group"));
    }

    #[test]
    fn a_volume_is_made_once_with_its_owner_and_then_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("svc/data").to_string_lossy().into_owned();
        let name = "data".to_string();
        ensure([(&name, &dir)], Some("0:0")).unwrap();
        let m = std::fs::metadata(&dir).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        assert_eq!((m.uid(), m.gid()), (0, 0));
        std::fs::write(Path::new(&dir).join("kept"), "x").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure([(&name, &dir)], Some("0:0")).unwrap();
        assert!(Path::new(&dir).join("kept").exists());
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let other = root.path().join("svc/x").to_string_lossy().into_owned();
        let e = ensure([(&name, &other)], Some("nobody-here")).unwrap_err();
        assert!(e.starts_with("named volumes: user \"nobody-here\""), "{e}");
        assert!(!Path::new(&other).exists());
        assert!(remove_service(root.path(), "svc").unwrap());
        assert!(!remove_service(root.path(), "svc").unwrap());
    }
}
