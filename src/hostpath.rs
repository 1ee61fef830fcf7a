//! Creating a volume's missing host path (`create_host_path = true`): a directory owned by
//! the component's user, resolved on this host.

use std::ffi::CString;
use std::path::Path;

/// Creates `path` (and its missing parents, owned by the agent) and gives the directory
/// itself to `user` (`USER[:GROUP]`, numeric or names of this host; no group: a user
/// name's primary group, a numeric uid's group left as it is). The owner is resolved first,
/// so a user this host does not know leaves nothing behind.
pub fn create(path: &Path, user: Option<&str>) -> Result<(), String> {
    let owner = match user {
        Some(u) => Some(resolve(u)?),
        None => None,
    };
    std::fs::create_dir_all(path).map_err(|e| format!("cannot create it: {e}"))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), gid)
            .map_err(|e| format!("created, but cannot give it to user {uid}: {e}"))?;
    }
    Ok(())
}

/// The uid and gid of `USER[:GROUP]` on this host.
pub fn resolve(user: &str) -> Result<(u32, Option<u32>), String> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => {
            let (uid, gid) = passwd(u)?.ok_or_else(|| {
                format!(
                    "cannot be created owned by user {u:?}: no such user on this host (the name is the container's; give a numeric uid)"
                )
            })?;
            (uid, Some(gid))
        }
    };
    let gid = match g {
        None => primary,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group(g)?.ok_or_else(|| {
                format!(
                    "cannot be created owned by group {g:?}: no such group on this host (the name is the container's; give a numeric gid)"
                )
            })?,
        }),
    };
    Ok((uid, gid))
}

fn c_name(name: &str) -> Result<CString, String> {
    CString::new(name).map_err(|_| format!("{name:?} contains NUL"))
}

/// The uid and primary gid of the user `name` (NSS, as `id NAME` sees it).
fn passwd(name: &str) -> Result<Option<(u32, u32)>, String> {
    let cname = c_name(name)?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: every pointer is valid for the call; `pwd` is read only when `result` is set.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 {
            return Err(format!(
                "cannot look up user {name:?}: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        Ok((!result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid)))
    }
}

/// The gid of the group `name`.
fn group(name: &str) -> Result<Option<u32>, String> {
    let cname = c_name(name)?;
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: as in `passwd`.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrnam_r(
            cname.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 {
            return Err(format!(
                "cannot look up group {name:?}: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        Ok((!result.is_null()).then_some(grp.gr_gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_numeric_or_by_name_and_unknown_names_are_said() {
        assert_eq!(resolve("1234").unwrap(), (1234, None));
        assert_eq!(resolve("1234:99").unwrap(), (1234, Some(99)));
        assert_eq!(resolve("root").unwrap(), (0, Some(0)));
        assert_eq!(resolve("0:root").unwrap(), (0, Some(0)));
        let e = resolve("no-such-user-mcp").unwrap_err();
        assert!(
            e.contains("\"no-such-user-mcp\": no such user on this host"),
            "{e}"
        );
        let e = resolve("0:no-such-group-mcp").unwrap_err();
        assert!(e.contains("no such group on this host"), "{e}");
    }

    #[test]
    fn a_created_path_belongs_to_the_user_and_a_bad_user_leaves_nothing() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a/b");
        create(&p, Some("4321:4322")).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        assert!(m.is_dir());
        assert_eq!((m.uid(), m.gid()), (4321, 4322));
        let q = dir.path().join("c");
        assert!(create(&q, Some("no-such-user-mcp")).is_err());
        assert!(!q.exists());
    }
}
