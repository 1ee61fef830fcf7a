//! Bad service files and bad configs: the right exit code, a message naming file, line and
//! reason, and the registry byte-for-byte unchanged.

mod agentkit;
mod common;

use agentkit::Agent;
use common::PrivatePodman;

const GOOD: &str = "name = \"good\"\n[[components]]\nname = \"web\"\nimage = \"localhost/x:1\"\nports = [\"18080:80\"]\n";

fn registry_files(agent: &Agent) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(agent.db.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().ends_with("-shm"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    files.sort();
    files
}

/// (file text, line:col the message must name, words of the reason)
const BAD_SERVICES: &[(&str, &str, &str)] = &[
    ("name = \"Bad Name\"\n", ":1:8:", "service name"),
    ("name = \"x\"\n[[components]\n", ":2:", "unclosed array table"),
    ("name = \"x\"\ncolour = \"red\"\n", ":2:1:", "unknown field `colour`"),
    ("name = \"x\"\nactive = \"yes\"\n", ":2:10:", "expected a boolean"),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\nports = 80\n", ":5:9:", "expected a sequence"),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\n[[components]]\nname = \"web\"\nimage = \"i\"\n", ":6:8:", "duplicate component name \"web\""),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\n[[components.routes]]\nname = \"r\"\nport = 80\nhostname = \"a.test\"\n[[components.routes]]\nname = \"r\"\nport = 81\nhostname = \"b.test\"\n", ":10:8:", "duplicate route name \"r\""),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\nvolumes = [\"srv/data:/data\"]\n", ":5:12:", "must be absolute"),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\nvolumes = [\"/srv/../etc:/data\"]\n", ":5:12:", "'..'"),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\nports = [\"99999:80\"]\n", ":5:10:", "outside 1-65535"),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\n[[components.routes]]\nname = \"r\"\nport = 0\nhostname = \"a.test\"\n", ":7:8:", "outside 1-65535"),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\nports = [\"18080:81\"]\n", ":5:10:", "fixed host port 18080/tcp is also used by service \"good\""),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\n[[components.routes]]\nname = \"r\"\nport = 80\nhostname = \"not_a host\"\n", ":8:12:", "hostname"),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\nenv = { \"A=B\" = \"1\" }\n", ":5:", "env key \"A=B\""),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\nenv = { \"A\\u0000\" = \"1\" }\n", ":5:", "env key"),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\ndesired_state = \"paused\"\n", ":5:17:", "unknown variant `paused`"),
    ("name = \"x\"\n[[components]]\nname = \"web\"\n", ":2:1:", "missing field `image`"),
    // Health checks, one-shot components and dependency order (issue 14).
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\ndepends_on = { db = \"healthy\" }\n", ":5:16:", "depends_on \"db\": service \"x\" has no component \"db\""),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\ndepends_on = { \"auth/api\" = \"healthy\" }\n", ":5:16:", "depends_on \"auth/api\": service \"auth\" is neither in the files applied nor in the registry"),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\ndepends_on = { \"good/api\" = \"healthy\" }\n", ":5:16:", "depends_on \"good/api\": service \"good\" (in the registry) has no component \"api\""),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\ndepends_on = { db = \"healthy\" }\n[[components]]\nname = \"db\"\nimage = \"i\"\n[components.depends_on]\nweb = \"started\"\n", ":10:1:", "dependency cycle: x/web -> x/db -> x/web"),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\noneshot = true\nrestart = \"always\"\n", ":5:11:", "oneshot = true needs restart = \"no\""),
    ("name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\n[components.health]\ntest = [\"NONE\"]\n", ":6:9:", "health test [\"NONE\"]"),
];

#[test]
fn bad_service_files_exit_65_name_the_line_and_change_nothing() {
    let podman = PrivatePodman::start();
    let agent = Agent::new(&podman, "");
    agent.apply("good.toml", GOOD);
    let before = registry_files(&agent);
    assert!(!before.is_empty());
    for (i, (text, at, reason)) in BAD_SERVICES.iter().enumerate() {
        let name = format!("bad{i}.toml");
        let path = agent.service_file(&name, text);
        let r = agent.run(&["apply", path.to_str().unwrap()]);
        assert_eq!(r.code, 65, "{text:?}\n{r}");
        let want = format!("{}{at}", path.display());
        assert!(r.stderr.contains(&want), "{text:?}: want {want}\n{r}");
        assert!(r.stderr.contains(reason), "{text:?}: want {reason:?}\n{r}");
        assert_eq!(
            registry_files(&agent),
            before,
            "{text:?} changed the registry"
        );
    }
    // A directory holding one good and one bad file applies nothing at all.
    let dir = agent.path().join("mixed");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("a.toml"),
        GOOD.replace("good", "other").replace("18080", "18081"),
    )
    .unwrap();
    std::fs::write(dir.join("b.toml"), BAD_SERVICES[0].0).unwrap();
    let r = agent.run(&["apply", dir.to_str().unwrap()]);
    assert_eq!(r.code, 65, "{r}");
    assert!(r.stderr.contains("b.toml:1:8"), "{r}");
    assert_eq!(registry_files(&agent), before);
    // A dependency cycle through two services applied together: named at the entry that
    // closes it, in the second file.
    let dir = agent.path().join("cycle");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("a.toml"),
        "name = \"shop\"\n[[components]]\nname = \"app\"\nimage = \"i\"\ndepends_on = { \"auth/api\" = \"healthy\" }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.toml"),
        "name = \"auth\"\n[[components]]\nname = \"api\"\nimage = \"i\"\ndepends_on = { \"shop/app\" = \"started\" }\n",
    )
    .unwrap();
    let r = agent.run(&["apply", dir.to_str().unwrap()]);
    assert_eq!(r.code, 65, "{r}");
    let want = format!(
        "{}:5:16: dependency cycle: shop/app -> auth/api -> shop/app",
        dir.join("b.toml").display()
    );
    assert!(r.stderr.contains(&want), "want {want}\n{r}");
    assert_eq!(registry_files(&agent), before);
    // Env values never appear in errors.
    let path = agent.service_file(
        "secret.toml",
        "name = \"x\"\n[[components]]\nname = \"web\"\nimage = \"i\"\nenv = { K = \"hunter2\\u0000\" }\n",
    );
    let r = agent.run(&["apply", path.to_str().unwrap()]);
    assert_eq!(r.code, 65, "{r}");
    assert!(!r.stderr.contains("hunter2"), "{r}");
}

/// (config TOML appended, line:col, reason)
const BAD_CONFIGS: &[(&str, &str, &str)] = &[
    (
        "[reconcile]\nintervall = \"1s\"\n",
        ":",
        "unknown field `intervall`",
    ),
    ("[reconcile]\ninterval = 30\n", ":", "expected a string"),
    (
        "[reconcile]\ninterval = \"thirty seconds\"\n",
        ":",
        "duration",
    ),
    ("[reconcile]\nconcurrency = \"8\"\n", ":", "invalid type"),
    ("[ports]\nrange = \"30000-20000\"\n", ":", "port range"),
    (
        "[proxy]\nkind = \"haproxy\"\n",
        ":",
        "unknown variant `haproxy`",
    ),
    ("[reconcile\n", ":", "unclosed table"),
    ("[surprise]\n", ":", "unknown field `surprise`"),
];

#[test]
fn bad_configs_exit_78_name_the_line_and_change_nothing() {
    let podman = PrivatePodman::start();
    let good = Agent::new(&podman, "");
    good.apply("good.toml", GOOD);
    let before = registry_files(&good);
    let base = std::fs::read_to_string(&good.config).unwrap();
    let base_lines = base.lines().count();
    for (extra, _, reason) in BAD_CONFIGS {
        std::fs::write(&good.config, format!("{base}{extra}")).unwrap();
        for args in [
            &["check-config"][..],
            &["--once"],
            &["apply", "good.toml"],
            &["status"],
        ] {
            let r = good.run(args);
            assert_eq!(r.code, 78, "{extra:?} {args:?}\n{r}");
            let prefix = format!("{}:", good.config.display());
            assert!(r.stderr.contains(&prefix), "{extra:?}: want {prefix}\n{r}");
            assert!(r.stderr.contains(reason), "{extra:?}: want {reason}\n{r}");
            // The line named is inside the appended text, after the base config.
            let line: usize = r.stderr[r.stderr.find(&prefix).unwrap() + prefix.len()..]
                .split(':')
                .next()
                .unwrap()
                .parse()
                .unwrap_or_else(|_| panic!("no line number in {r}"));
            assert!(
                line > base_lines,
                "{extra:?}: line {line} is not in the bad part\n{r}"
            );
        }
        assert_eq!(registry_files(&good), before);
    }
    std::fs::write(&good.config, &base).unwrap();
    let r = good.ok(&["check-config"]);
    assert!(r.stdout.contains("interval = \"30s\""), "{r}");
    let r = good.run(&["--config-typo"]);
    assert_eq!(r.code, 2, "usage errors exit 2: {r}");
    let missing = good.path().join("missing.toml");
    let r: agentkit::Run = std::process::Command::new(agentkit::BIN)
        .args(["--config", missing.to_str().unwrap(), "check-config"])
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 78, "{r}");
    assert!(r.stderr.contains("missing.toml"), "{r}");
}
