//! Issue 13 §2 against a real, private podman 4.3: a named volume is a directory of the
//! agent's (`[volumes] root`/service/name) made with the component's user as owner; its
//! data survives podman's database loss, the loss of all of podman's storage (what
//! `podman system reset` does to it) with the image imported again, and re-applies;
//! `remove` keeps it and `remove --volumes` deletes it. `tmpfs` and `read_only` are
//! applied.

mod agentkit;
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use agentkit::{summary, Agent};
use common::PrivatePodman;

const IMAGE: &str = "localhost/busybox:latest";

fn service() -> String {
    format!(
        r#"
name = "pg"

[[components]]
name = "db"
image = "{IMAGE}"
user = "1000:1000"
cmd = ["sleep", "1000"]
volumes = ["pgdata:/data"]
tmpfs = ["/scratch:size=1m,mode=1777"]
read_only = true
"#
    )
}

fn exec(podman: &PrivatePodman, script: &str) -> String {
    podman.podman_ok(&["exec", "pg-db", "sh", "-c", script])
}

#[test]
fn a_named_volume_outlives_podman_and_goes_only_with_remove_volumes() {
    let mut podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(&podman, "");
    let file = agent.service_file("pg.toml", &service());
    agent.ok(&["apply", file.to_str().unwrap()]);
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 1, already running 0, failed 0, skipped 0",
        "{r}"
    );

    // The directory beside the registry, the component's user's, 0700.
    let dir = agent.path().join("state/volumes/pg/pgdata");
    let m = std::fs::metadata(&dir).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    assert_eq!(m.permissions().mode() & 0o777, 0o700);
    let c = podman.inspect("pg-db").unwrap();
    let mounts = c["Mounts"].as_array().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["Destination"] == "/data" && m["Source"] == dir.to_str().unwrap()),
        "{mounts:?}"
    );
    assert_eq!(c["HostConfig"]["ReadonlyRootfs"], true);
    // The component's user writes to it; the root fs is read-only; the tmpfs is there.
    let out = exec(
        &podman,
        "id -u; echo kept > /data/file && cat /data/file; \
         (touch /rootfs-write) 2>/dev/null && echo rootfs-writable; \
         grep ' /scratch ' /proc/mounts; echo t > /scratch/t && cat /scratch/t; stat -c %a /scratch",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "{out}");
    assert_eq!(lines[1], "kept", "{out}");
    assert!(!out.contains("rootfs-writable"), "{out}");
    assert!(lines[2].starts_with("tmpfs /scratch tmpfs "), "{out}");
    assert!(lines[2].contains("size=1024k"), "{out}");
    assert_eq!(lines[3], "t", "{out}");
    assert_eq!(lines[4], "1777", "{out}");

    // Podman's database lost: the container is made again, on the same data.
    podman.lose_database();
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 1, already running 0, failed 0, skipped 0",
        "{r}"
    );
    assert_eq!(exec(&podman, "cat /data/file"), "kept");

    // All of podman's storage gone (what `podman system reset` does to a root; not run
    // here, since it also resets this machine's shared network configuration), the
    // image imported again: the same data.
    podman.lose_storage();
    assert!(podman.podman_ok(&["images", "-q"]).trim().is_empty());
    podman.import_busybox(IMAGE);
    let r = agent.ok(&["--once"]);
    assert_eq!(
        summary(&r),
        "recovered 1, already running 0, failed 0, skipped 0",
        "{r}"
    );
    assert_eq!(exec(&podman, "cat /data/file"), "kept");

    // A re-apply changes nothing; a plain remove keeps the data for the next apply.
    let r = agent.ok(&["apply", file.to_str().unwrap()]);
    assert_eq!(r.stdout.trim(), "unchanged pg", "{r}");
    let r = agent.ok(&["remove", "pg"]);
    assert!(r.stdout.contains("named volumes kept in"), "{r}");
    agent.ok(&["--once"]);
    assert!(podman.inspect("pg-db").is_none());
    assert!(dir.join("file").exists());
    agent.ok(&["apply", file.to_str().unwrap()]);
    agent.ok(&["--once"]);
    assert_eq!(exec(&podman, "cat /data/file"), "kept");

    // remove --volumes: the data is gone.
    let r = agent.ok(&["remove", "pg", "--volumes"]);
    assert!(r.stdout.contains("named volumes deleted"), "{r}");
    assert!(!agent.path().join("state/volumes/pg").exists());
    agent.ok(&["--once"]);
    assert!(podman.inspect("pg-db").is_none());
}

#[test]
fn a_user_the_host_does_not_know_is_said_and_a_configured_root_is_used() {
    let podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    let agent = Agent::new(&podman, "[volumes]\nroot = \"vols\"\n");
    agent.apply(
        "v.toml",
        &format!(
            "name = \"v\"\n[[components]]\nname = \"named\"\nimage = \"{IMAGE}\"\n\
             user = \"no-such-user-here\"\ncmd = [\"sleep\", \"1000\"]\nvolumes = [\"data:/data\"]\n\n\
             [[components]]\nname = \"nouser\"\nimage = \"{IMAGE}\"\ncmd = [\"sleep\", \"1000\"]\n\
             volumes = [\"data:/data\", \"cache:/cache:U\"]\n"
        ),
    );
    let r = agent.run(&["--once"]);
    assert_eq!(r.code, 1, "{r}");
    assert!(
        r.stdout.contains("v/named (v-named): failed: named volumes: user \"no-such-user-here\" is not a user of this host"),
        "{r}"
    );
    // Two components of a service share its volume by name; without a user the
    // directory is the agent's.
    let dir = agent.path().join("vols/v/data");
    assert!(dir.is_dir(), "{}", dir.display());
    assert_eq!(std::fs::metadata(&dir).unwrap().uid(), 0);
    assert!(podman.running("v-nouser"));
}
