//! The Debian package, built and taken apart. cargo-deb (installed by tests/run.sh) packages
//! the debug binary this suite already built (`--no-build`, from a scratch target dir whose
//! release/gatehouse links to it, so no release build is needed), then dpkg-deb reads it back:
//! files, modes and owners, control fields, conffiles, maintainer scripts, the systemd units
//! (`systemd-analyze verify` and `security`, else their keys checked here), the desktop entry,
//! man pages and completions; and the binary out of the package runs. The hub unit's command
//! line is also started for real, to see that its admin token goes to the file, not the journal.

#![allow(clippy::unwrap_used, reason = "a test should stop loudly at the first surprise")]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_gatehouse");
const SOURCE: &str = env!("CARGO_MANIFEST_DIR");
/// Bounds every wait on a child process of these tests.
const LIMIT: Duration = Duration::from_secs(30);

// ---- the package ----

#[test]
fn the_deb_has_the_binary_units_desktop_entry_man_pages_and_completions() {
    let scratch = tempfile::tempdir().unwrap();
    let deb = build_deb(scratch.path());

    let contents = contents(&deb);
    let expect = |path: &str, mode: &str| {
        let entry = contents.get(path).unwrap_or_else(|| panic!("the package has no {path}"));
        assert_eq!(entry.mode, mode, "{path} has mode {}, expected {mode}", entry.mode);
        assert!(entry.owned_by_root(), "{path} is owned by {}, expected root/root", entry.owner);
    };
    expect("./usr/bin/gatehouse", "-rwxr-xr-x");
    expect("./usr/lib/systemd/system/gatehouse-node.service", "-rw-r--r--");
    expect("./usr/lib/systemd/system/gatehouse-hub.service", "-rw-r--r--");
    expect("./usr/share/applications/gatehouse.desktop", "-rw-r--r--");
    expect("./usr/share/icons/hicolor/128x128/apps/gatehouse.png", "-rw-r--r--");
    // May hold a database password: root-only (systemd reads it before dropping privileges).
    expect("./etc/gatehouse/hub.env", "-rw-------");
    expect("./usr/share/bash-completion/completions/gatehouse", "-rw-r--r--");
    expect("./usr/share/zsh/vendor-completions/_gatehouse", "-rw-r--r--");
    expect("./usr/share/fish/vendor_completions.d/gatehouse.fish", "-rw-r--r--");
    expect("./usr/share/doc/gatehouse/copyright", "-rw-r--r--");
    for page in man_page_names() {
        expect(&format!("./usr/share/man/man1/{page}.1.gz"), "-rw-r--r--");
    }
    let pages = contents
        .keys()
        .filter(|p| {
            p.starts_with("./usr/share/man/man1/") && Path::new(p).extension().is_some_and(|e| e == "gz")
        })
        .count();
    assert_eq!(pages, man_page_names().len(), "the package has man pages for commands that don't exist");
    assert!(
        !contents.keys().any(|p| p.contains("gatehouse-generate")),
        "the hidden `generate` command got a man page"
    );
    for (path, entry) in &contents {
        assert!(entry.owned_by_root(), "{path} is owned by {}", entry.owner);
        assert!(
            !path.starts_with("./var/") && !path.starts_with("./home/"),
            "{path}: state dirs are made by postinst and systemd, not shipped"
        );
    }

    let control = scratch.path().join("control");
    run_ok(Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&control));
    let fields = read(&control.join("control"));
    let field = |name: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("control has no {name}:\n{fields}"))
            .to_owned()
    };
    assert_eq!(field("Package"), "gatehouse");
    assert_eq!(field("Version"), format!("{}-1", env!("CARGO_PKG_VERSION")));
    assert_eq!(field("Architecture"), "amd64");
    let depends = field("Depends");
    for needed in ["libc6", "adduser", "libgl1", "libegl1", "libxkbcommon-x11-0"] {
        assert!(depends.split(", ").any(|d| d.starts_with(needed)), "Depends lacks {needed}: {depends}");
    }
    assert!(!depends.contains("-dev"), "a -dev package in Depends: {depends}");
    assert_eq!(read(&control.join("conffiles")).trim(), "/etc/gatehouse/hub.env");

    maintainer_scripts_make_the_user_and_leave_units_disabled(&control);

    let root = scratch.path().join("root");
    run_ok(Command::new("dpkg-deb").arg("--extract").arg(&deb).arg(&root));
    units_run_gatehouse_hardened_as_its_own_user(&root);
    desktop_entry_opens_the_window_with_the_icon(&root);
    man_pages_render_the_clap_help(&root);
    completions_load_in_their_shells(&root);
    packaged_binary_runs(&root);
}

fn maintainer_scripts_make_the_user_and_leave_units_disabled(control: &Path) {
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        let mode =
            std::fs::metadata(&path).unwrap_or_else(|e| panic!("no {script}: {e}")).permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{script} has mode {:o}", mode & 0o777);
        run_ok(Command::new("sh").arg("-n").arg(&path));
    }
    let postinst = read(&control.join("postinst"));
    assert!(postinst.contains("adduser --system --group"), "postinst makes no system user:\n{postinst}");
    assert!(
        postinst.contains("install -d -o gatehouse -g gatehouse -m 0710 /var/lib/gatehouse\n"),
        "postinst doesn't make the node's dir passable for its group:\n{postinst}"
    );
    assert!(!postinst.contains("#DEBHELPER#"), "cargo-deb left #DEBHELPER# unfilled:\n{postinst}");
    for unit in ["gatehouse-node.service", "gatehouse-hub.service"] {
        let handled = postinst.matches(&format!("deb-systemd-helper update-state {unit}")).count();
        assert_eq!(handled, 1, "postinst handles {unit} {handled} times:\n{postinst}");
    }
    // Not enabled or started on install (a node must be registered first); an upgrade
    // restarts only what runs.
    assert!(!postinst.contains("deb-systemd-invoke start"), "postinst starts a service:\n{postinst}");
    assert!(postinst.contains("was-enabled"), "postinst enables units unconditionally:\n{postinst}");
    let prerm = read(&control.join("prerm"));
    assert!(prerm.contains("deb-systemd-invoke stop"), "prerm doesn't stop the services:\n{prerm}");
}

fn units_run_gatehouse_hardened_as_its_own_user(root: &Path) {
    let units = root.join("usr/lib/systemd/system");
    for (unit, command, state) in [
        ("gatehouse-node.service", "/usr/bin/gatehouse node run", "gatehouse"),
        ("gatehouse-hub.service", "/usr/bin/gatehouse hub serve", "gatehouse-hub"),
    ] {
        let text = read(&units.join(unit));
        let keys = unit_keys(&text);
        let one = |key: &str| match keys.get(key).map(Vec::as_slice) {
            Some([value]) => value.clone(),
            other => panic!("{unit}: expected one {key}=, found {other:?}"),
        };
        assert!(one("ExecStart").starts_with(command), "{unit}: ExecStart={}", one("ExecStart"));
        assert_eq!(one("User"), "gatehouse", "{unit}");
        assert_eq!(one("Group"), "gatehouse", "{unit}");
        assert_eq!(one("StateDirectory"), state, "{unit}");
        let home = format!("GATEHOUSE_HOME=/var/lib/{state}");
        assert!(keys["Environment"].contains(&home), "{unit}: no Environment={home}");
        assert_eq!(one("WorkingDirectory"), format!("/var/lib/{state}"), "{unit}");
        assert_eq!(one("Restart"), "on-failure", "{unit}");
        assert_eq!(one("UMask"), "0077", "{unit}");
        assert_eq!(one("WantedBy"), "multi-user.target", "{unit}");
        for (key, value) in [
            ("NoNewPrivileges", "yes"),
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("PrivateDevices", "yes"),
            ("ProtectKernelTunables", "yes"),
            ("ProtectControlGroups", "yes"),
            ("RestrictSUIDSGID", "yes"),
            ("MemoryDenyWriteExecute", "yes"),
            ("CapabilityBoundingSet", ""),
        ] {
            assert_eq!(one(key), value, "{unit}: {key}");
        }
        // Secrets come through files and the environment, never argv (visible to every user).
        for secret in ["--token", "--password", "--key", "postgres://", "gha_", "gh1_"] {
            assert!(!one("ExecStart").contains(secret), "{unit}: ExecStart has {secret}");
        }
        for page in one("Documentation").split_whitespace() {
            let name = page.strip_prefix("man:").and_then(|p| p.strip_suffix("(1)")).expect("man:NAME(1)");
            assert!(
                root.join(format!("usr/share/man/man1/{name}.1.gz")).is_file(),
                "{unit} documents {page}, which the package lacks"
            );
        }
    }
    let node = unit_keys(&read(&units.join("gatehouse-node.service")));
    // What `node register` writes: before it exists the unit is skipped, not restarted in a loop.
    assert_eq!(node["ConditionPathExists"], ["/var/lib/gatehouse/node.toml"]);
    // The window and `node status` look for the system service where the unit keeps it, and
    // its group (the unit's Group=) may reach the control socket: the socket 0660, the way to
    // it 0710 (no listing), everything else in the dir owner-only.
    let home = format!("GATEHOUSE_HOME={}", gatehouse::paths::SERVICE_HOME);
    assert!(node["Environment"].contains(&home), "the node unit's data dir is not paths::SERVICE_HOME");
    assert_eq!(node["StateDirectory"], [gatehouse::paths::SERVICE_HOME.trim_start_matches("/var/lib/")]);
    assert_eq!(
        node["ExecStart"],
        [format!("/usr/bin/gatehouse node run --control-group {}", node["Group"][0])]
    );
    assert_eq!(node["Group"], [gatehouse::paths::SERVICE_GROUP]);
    assert_eq!(node["StateDirectoryMode"], ["0710"]);
    assert_eq!(unit_keys(&read(&units.join("gatehouse-hub.service")))["StateDirectoryMode"], ["0700"]);
    let hub = unit_keys(&read(&units.join("gatehouse-hub.service")));
    assert_eq!(hub["EnvironmentFile"], ["-/etc/gatehouse/hub.env"]);
    assert!(
        hub["Environment"]
            .contains(&"GATEHOUSE_ADMIN_TOKEN_FILE=/var/lib/gatehouse-hub/admin-token".to_owned())
    );

    systemd_analyze(root);
}

/// `systemd-analyze verify` (syntax, the executable, the man pages in Documentation=) and
/// `security` (the exposure score of the hardening) on the units inside the extracted package.
fn systemd_analyze(root: &Path) {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        println!(
            "systemd-analyze is not installed (tests/run.sh installs systemd): the unit keys above are all that was checked"
        );
        return;
    };
    assert!(version.status.success());
    // A package root has no sysinit.target and friends; verify needs them to load the units.
    let units = root.join("usr/lib/systemd/system");
    for entry in std::fs::read_dir("/usr/lib/systemd/system").into_iter().flatten().flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".target") && !units.join(&name).exists() {
            std::fs::copy(entry.path(), units.join(&name)).unwrap();
        }
    }
    let names =
        ["/usr/lib/systemd/system/gatehouse-node.service", "/usr/lib/systemd/system/gatehouse-hub.service"];
    let verify = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(names)
        // Documentation=man:… is looked up with man(1): in the package's pages.
        .env("MANPATH", root.join("usr/share/man")));
    let said =
        format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    assert!(verify.status.success() && said.trim().is_empty(), "systemd-analyze verify:\n{said}");
    for name in names {
        let security = run(Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(format!("--root={}", root.display()))
            .arg(name));
        let text = String::from_utf8_lossy(&security.stdout);
        let overall = text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| {
            panic!("systemd-analyze security said:\n{text}{}", String::from_utf8_lossy(&security.stderr))
        });
        println!("{}", overall.trim_start_matches(['→', ' ']));
        assert!(
            overall.contains(" OK") || overall.contains(" SAFE"),
            "{name} is exposed (a hardening setting was lost?): {overall}"
        );
    }
}

fn desktop_entry_opens_the_window_with_the_icon(root: &Path) {
    let path = root.join("usr/share/applications/gatehouse.desktop");
    if Command::new("desktop-file-validate").arg("--help").output().is_ok() {
        let out = run_ok(Command::new("desktop-file-validate").arg(&path));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.trim().is_empty(), "desktop-file-validate has remarks:\n{said}");
    } else {
        println!(
            "desktop-file-validate is not installed (tests/run.sh installs desktop-file-utils): checking the keys only"
        );
    }
    let text = read(&path);
    assert_eq!(text.lines().next(), Some("[Desktop Entry]"));
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("the desktop entry has no {key}=:\n{text}"))
    };
    assert_eq!(value("Type"), "Application");
    let exec: Vec<&str> = value("Exec").split_whitespace().collect();
    assert_eq!(exec, ["gatehouse", "gui"], "Exec= must open the window");
    assert!(root.join("usr/bin").join(exec[0]).is_file(), "Exec={} is not in the package", exec[0]);
    let icon = root.join(format!("usr/share/icons/hicolor/128x128/apps/{}.png", value("Icon")));
    let png = std::fs::read(&icon)
        .unwrap_or_else(|e| panic!("Icon={} has no file {}: {e}", value("Icon"), icon.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", icon.display());
    let (width, height) = (
        u32::from_be_bytes(png[16..20].try_into().unwrap()),
        u32::from_be_bytes(png[20..24].try_into().unwrap()),
    );
    assert_eq!((width, height), (128, 128), "the icon in hicolor/128x128 is {width}×{height}");
    assert_eq!(value("StartupWMClass"), "gatehouse");
}

fn man_pages_render_the_clap_help(root: &Path) {
    let page = |name: &str| {
        let out =
            run_ok(Command::new("gzip").arg("-dc").arg(root.join(format!("usr/share/man/man1/{name}.1.gz"))));
        String::from_utf8(out.stdout).unwrap()
    };
    let top = page("gatehouse");
    assert!(top.contains(".TH gatehouse 1"), "gatehouse.1 has no title:\n{top}");
    assert!(top.contains("gatehouse\\-node(1)"), "gatehouse.1 doesn't refer to gatehouse-node(1)");
    let run = page("gatehouse-node-run");
    assert!(run.contains("Run the node service in the foreground"), "gatehouse-node-run.1:\n{run}");
    let serve = page("gatehouse-hub-serve");
    for option in ["listen", "db", "admin\\-token\\-file", "GATEHOUSE_HUB_DB"] {
        assert!(serve.contains(option), "gatehouse-hub-serve.1 doesn't mention {option}:\n{serve}");
    }
}

fn completions_load_in_their_shells(root: &Path) {
    let bash = root.join("usr/share/bash-completion/completions/gatehouse");
    // Sourced, it registers a completion for `gatehouse` that offers the subcommands.
    let script = format!(
        "source {} && complete -p gatehouse && COMP_WORDS=(gatehouse no) COMP_CWORD=1 COMP_LINE='gatehouse no' COMP_POINT=12 && \
         $(complete -p gatehouse | sed -E 's/.*-F ([^ ]+).*/\\1/') gatehouse no gatehouse && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    );
    let out = run_ok(Command::new("bash").arg("-c").arg(script));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("gatehouse"), "bash registered no completion:\n{said}");
    assert!(said.lines().any(|l| l == "node"), "bash doesn't complete `gatehouse no` to `node`:\n{said}");
    let zsh = read(&root.join("usr/share/zsh/vendor-completions/_gatehouse"));
    assert!(zsh.starts_with("#compdef gatehouse"), "the zsh completion has no #compdef line");
    let fish = read(&root.join("usr/share/fish/vendor_completions.d/gatehouse.fish"));
    assert!(fish.contains("complete -c gatehouse"), "the fish completion completes nothing");
    for shell in [&zsh, &fish] {
        assert!(shell.contains("register") && shell.contains("serve"), "a completion lacks subcommands");
    }
}

fn packaged_binary_runs(root: &Path) {
    let binary = root.join("usr/bin/gatehouse");
    let version = run_ok(Command::new(&binary).arg("--version"));
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("gatehouse {}", env!("CARGO_PKG_VERSION"))
    );
    let help = String::from_utf8(run_ok(Command::new(&binary).arg("--help")).stdout).unwrap();
    for command in ["cert", "hub", "node", "job", "gui"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(command)), "--help lacks {command}:\n{help}");
    }
    assert!(!help.contains("generate"), "--help shows the hidden generate command:\n{help}");
    let node = String::from_utf8(run_ok(Command::new(&binary).args(["node", "--help"])).stdout).unwrap();
    assert!(node.contains("register") && node.contains("run"), "node --help:\n{node}");
}

// ---- generate ----

#[test]
fn generate_writes_a_man_page_per_visible_command_and_three_completions() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man");
    let out = run_ok(Command::new(BINARY).args(["generate", "man"]).arg(&man));
    let mut written: Vec<String> = std::fs::read_dir(&man)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    let mut expected: Vec<String> = man_page_names().into_iter().map(|n| format!("{n}.1")).collect();
    expected.sort();
    assert_eq!(written, expected);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        expected.len(),
        "it prints each file it wrote"
    );

    let completions = dir.path().join("completions");
    run_ok(Command::new(BINARY).args(["generate", "completions"]).arg(&completions));
    for name in ["gatehouse.bash", "_gatehouse", "gatehouse.fish"] {
        let text = read(&completions.join(name));
        assert!(
            text.contains("gatehouse") && text.contains("enable-remote-access"),
            "{name} lacks the commands"
        );
    }
}

#[test]
fn generate_into_a_file_says_so_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let out = run(Command::new(BINARY).args(["generate", "man"]).arg(&file));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: creating ") && stderr.contains("not-a-dir"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(read(&file), "x", "the file in the way was changed");
}

// ---- the hub unit's command line ----

#[test]
fn the_hub_unit_writes_its_admin_token_to_the_file_and_never_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_keys(&read(&Path::new(SOURCE).join("installer/gatehouse-hub.service")));
    // The environment systemd would give the hub: Environment=, then the shipped hub.env
    // (which overrides), with the state dir moved into the test's dir and a free port.
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let relocate = |value: &str| value.replace("/var/lib/gatehouse-hub", &state.to_string_lossy());
    let mut env = BTreeMap::new();
    for line in
        unit["Environment"].iter().chain(env_file_lines(&Path::new(SOURCE).join("installer/hub.env")).iter())
    {
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not KEY=VALUE: {line}"));
        env.insert(key.to_owned(), relocate(value));
    }
    env.insert("GATEHOUSE_HUB_LISTEN".to_owned(), "127.0.0.1:0".to_owned());
    let argv = exec_start(&unit["ExecStart"][0], &env);
    assert_eq!(argv[..3], ["/usr/bin/gatehouse", "hub", "serve"]);
    let token_file = PathBuf::from(&env["GATEHOUSE_ADMIN_TOKEN_FILE"]);
    assert!(token_file.starts_with(&state), "the token file is outside the state dir");

    // A token file that can't be written stops the hub before it makes a token.
    let mut blocked = env.clone();
    blocked.insert(
        "GATEHOUSE_ADMIN_TOKEN_FILE".to_owned(),
        state.join("missing/admin-token").to_string_lossy().into(),
    );
    let out =
        run(Command::new(BINARY).args(&argv[1..]).env_clear().envs(&blocked).env("PATH", "/usr/bin:/bin"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("can't write the admin token into") && stderr.contains("no token was made"),
        "{stderr}"
    );

    let token = {
        let mut hub = Hub::start(&argv, &env, dir.path(), "first");
        let url = hub.wait_for_line("listening on ");
        let said = hub.wait_for_line("admin token written to ");
        assert_eq!(
            said,
            format!("{} (owner-only; admin commands read it with --token-file)", token_file.display())
        );
        let token = read(&token_file).trim().to_owned();
        assert!(token.starts_with("gha_"), "the token file holds {token:?}");
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the token file is readable by others");

        // The token works, read from the file as the README says.
        let created = run(Command::new(BINARY)
            .args(["hub", "gateway", "create", "sales", "--hub", &url, "--token-file"])
            .arg(&token_file)
            .env_remove("GATEHOUSE_ADMIN_TOKEN"));
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        let output = hub.stop();
        assert!(!output.contains(&token), "the hub printed its admin token:\n{output}");
        token
    };

    // Started again on the same database it has a token already: the file stays as it was.
    let mut hub = Hub::start(&argv, &env, dir.path(), "second");
    hub.wait_for_line("listening on ");
    let output = hub.stop();
    assert!(!output.contains("admin token"), "a restarted hub made a new token:\n{output}");
    assert_eq!(read(&token_file).trim(), token);
    let leftovers: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| Path::new(n).extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left in the state dir: {leftovers:?}");
}

/// `gatehouse hub serve` started as the unit's ExecStart, stdout and stderr into files.
struct Hub {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Hub {
    fn start(argv: &[String], env: &BTreeMap<String, String>, dir: &Path, name: &str) -> Self {
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let child = Command::new(BINARY)
            .args(&argv[1..])
            .env_clear()
            .envs(env)
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Self { child, stdout, stderr }
    }

    /// The rest of the first stdout line starting with `prefix`, within [`LIMIT`].
    fn wait_for_line(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let text = std::fs::read_to_string(&self.stdout).unwrap_or_default();
            if let Some(rest) = text.lines().find_map(|l| l.strip_prefix(prefix)) {
                return rest.to_owned();
            }
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "the hub printed no {prefix:?} ({exited:?}):\n{text}\n{}",
                read(&self.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM (as `systemctl stop`), wait, and everything the hub wrote.
    fn stop(&mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + LIMIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the hub ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        format!("{}{}", read(&self.stdout), read(&self.stderr))
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- helpers ----

/// Builds the .deb from the test build of the binary and returns its path. Prints how long
/// cargo-deb took.
fn build_deb(scratch: &Path) -> PathBuf {
    // cargo-deb's assets under target/release/ are looked up in $CARGO_TARGET_DIR/release/.
    let target = scratch.join("target");
    let release = target.join("release");
    std::fs::create_dir_all(&release).unwrap();
    std::os::unix::fs::symlink(BINARY, release.join("gatehouse")).unwrap();
    let man = release.join("generated/man");
    run_ok(Command::new(BINARY).args(["generate", "man"]).arg(&man));
    // As installer/build-deb.sh does: cargo-deb leaves assets from target/ as they are.
    let pages: Vec<PathBuf> = std::fs::read_dir(&man).unwrap().map(|e| e.unwrap().path()).collect();
    run_ok(Command::new("gzip").arg("-9n").args(&pages));
    run_ok(Command::new(BINARY).args(["generate", "completions"]).arg(release.join("generated/completions")));
    let deb = scratch.join("gatehouse.deb");
    let started = Instant::now();
    run_ok(
        Command::new(cargo_deb())
            .args(["deb", "--no-build", "--locked", "--fast", "--quiet", "--output"])
            .arg(&deb)
            .current_dir(SOURCE)
            .env("CARGO_TARGET_DIR", &target),
    );
    println!("cargo-deb packaged the debug binary in {:.1} s", started.elapsed().as_secs_f64());
    deb
}

/// cargo-deb: `GATEHOUSE_CARGO_DEB`, else what tests/run.sh installed, else PATH.
fn cargo_deb() -> PathBuf {
    const HINT: &str = "run `bash tests/run.sh` (it installs cargo-deb into ~/.cache/gatehouse-tools) or set GATEHOUSE_CARGO_DEB";
    if let Some(path) = std::env::var_os("GATEHOUSE_CARGO_DEB").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "GATEHOUSE_CARGO_DEB={} is not a file; {HINT}", path.display());
        return path;
    }
    let tools = std::env::var_os("GATEHOUSE_TOOLS")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/gatehouse-tools")));
    tools
        .map(|tools| tools.join("bin/cargo-deb"))
        .filter(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths)
                .map(|dir| dir.join("cargo-deb"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("cargo-deb is not installed: {HINT}"))
}

/// The man pages there should be: the top command and every visible subcommand, named
/// gatehouse-node-run and so on.
fn man_page_names() -> Vec<String> {
    use clap::CommandFactory as _;
    fn walk(command: &clap::Command, prefix: &str, names: &mut Vec<String>) {
        let name = if prefix.is_empty() {
            command.get_name().to_owned()
        } else {
            format!("{prefix}-{}", command.get_name())
        };
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            walk(sub, &name, names);
        }
        names.push(name);
    }
    let mut names = Vec::new();
    walk(&gatehouse::cli::Cli::command(), "", &mut names);
    names
}

struct Entry {
    mode: String,
    owner: String,
}

impl Entry {
    /// cargo-deb writes numeric owners (0/0), other tools names.
    fn owned_by_root(&self) -> bool {
        ["0/0", "root/root"].contains(&self.owner.as_str())
    }
}

/// `dpkg-deb --contents`: path → mode and owner, for files (not directories).
fn contents(deb: &Path) -> BTreeMap<String, Entry> {
    let out = run_ok(Command::new("dpkg-deb").arg("--contents").arg(deb));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (mode, owner, path) = (fields.first()?, fields.get(1)?, fields.get(5)?);
            (!mode.starts_with('d'))
                .then(|| ((*path).to_owned(), Entry { mode: (*mode).to_owned(), owner: (*owner).to_owned() }))
        })
        .collect()
}

/// A unit file's `Key=value` lines (every section), values in order of appearance.
fn unit_keys(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';', '[']) {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("not Key=value: {line}"));
        keys.entry(key.trim().to_owned()).or_default().push(value.trim().to_owned());
    }
    keys
}

fn env_file_lines(path: &Path) -> Vec<String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// ExecStart= split into words the way systemd does for these simple lines: `${VAR}` is one
/// word, `$VAR` splits at whitespace (an empty one is no word at all).
fn exec_start(line: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let lookup = |name: &str| env.get(name).cloned().unwrap_or_default();
    let mut words = Vec::new();
    for word in line.split_whitespace() {
        if let Some(name) = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
            words.push(lookup(name));
        } else if let Some(name) = word.strip_prefix('$') {
            words.extend(lookup(name).split_whitespace().map(str::to_owned));
        } else {
            words.push(word.to_owned());
        }
    }
    words
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn run(command: &mut Command) -> Output {
    command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("starting {command:?}: {e}"))
}

fn run_ok(command: &mut Command) -> Output {
    let out = run(command);
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
