//! The two places where the agent refers to a container by name instead of by id — finding
//! who holds a name, and freeing a name that podman's storage holds after its database was
//! lost — against a real podman, with a container whose id starts with that name (podman
//! resolves a reference that names no container as an id prefix).

mod common;

use common::PrivatePodman;
use mcp_agent::runtime::podman::Podman;
use mcp_agent::runtime::Runtime;

const IMAGE: &str = "localhost/busybox:latest";

#[test]
fn a_name_that_is_another_containers_id_prefix_never_reaches_that_container() {
    let mut podman = PrivatePodman::start();
    podman.import_busybox(IMAGE);
    // Held by storage once the database is lost.
    podman.podman_ok(&["create", "--name", "held", IMAGE, "sleep", "1"]);
    podman.lose_database();
    assert!(
        podman.inspect("held").is_none(),
        "the API no longer sees it"
    );
    // Known to the new database; its id's first three characters make a valid name that
    // no container has.
    podman.podman_ok(&["create", "--name", "bystander", IMAGE, "sleep", "1"]);
    let id = podman.inspect("bystander").unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let prefix = id[..3].to_string();

    let rt = Podman::new(&podman.socket_uri(), podman.cli_argv());
    common::block_on(async {
        // Podman's API answers `inspect <prefix>` with the bystander; that is not a holder.
        let (status, _) = podman.api("GET", &format!("/v1.41/containers/{prefix}/json"));
        assert_eq!(
            status, 200,
            "podman resolves the prefix (the hazard under test)"
        );
        assert_eq!(rt.holder(&prefix).await.unwrap(), None);
        let (held_by, _) = rt.holder("bystander").await.unwrap().expect("exact name");
        assert_eq!(held_by, id);

        // `podman rm --force <prefix>` would remove the bystander; the agent frees by the
        // full id of the storage-only container holding exactly that name.
        rt.free_storage_names(&["held".to_string(), prefix.clone()])
            .await
            .expect("free");
    });
    assert!(
        podman.inspect("bystander").is_some(),
        "the container whose id starts with {prefix} was removed"
    );
    // The storage-held name is free again.
    podman.podman_ok(&["create", "--name", "held", IMAGE, "sleep", "1"]);
    podman.podman_ok(&["rm", "--force", "held", "bystander"]);
}
