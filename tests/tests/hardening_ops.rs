//! What an operator can get wrong around a running agent, and how the agent refuses it
//! (issue 18): a second agent on the same pin directory or socket, a `--socket` that is not
//! a socket, pins in a private mount namespace that would vanish with the agent.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use cns_tests::{
    VirtualNode,
    agent::{NODE_NAME, agent_bin},
    cluster::{Cluster, ONLY_BETA, SERVER, cluster_yaml},
    eventually, kernel_or_skip,
    process::Background,
    traffic::tcp_ok,
    unique,
};

/// How the agent enters the node's network namespace.
#[derive(Clone, Copy)]
enum Enter {
    /// `nsenter --net`: the host's mounts (the way the agent is meant to run).
    Nsenter,
    /// `ip netns exec`: a private mount namespace with a fresh /sys.
    IpNetnsExec,
}

fn agent_cmd(
    enter: Enter,
    netns: &str,
    manifests: &Path,
    socket: &Path,
    pin_dir: &Path,
    extra: &[&str],
) -> Command {
    let mut cmd = match enter {
        Enter::Nsenter => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{netns}"));
            c
        }
        Enter::IpNetnsExec => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", netns]);
            c
        }
    };
    cmd.arg(agent_bin())
        .arg("run")
        .arg("--manifests")
        .arg(manifests)
        .args(["--node-name", NODE_NAME, "--metrics-addr", "none"])
        .arg("--socket")
        .arg(socket)
        .arg("--bpffs-dir")
        .arg(pin_dir)
        .args(extra)
        .env("CNS_LOG", "info");
    cmd
}

/// Starts an agent that must refuse to start: its stderr, after checking it exited non-zero.
fn refused(mut cmd: Command, what: &str) -> String {
    let mut bg = Background::spawn(&mut cmd);
    let status = bg.wait_exit(Duration::from_secs(20));
    let stderr = bg.stderr();
    match status {
        None => panic!("{what}: the agent kept running instead of refusing:\n{stderr}"),
        Some(s) => assert!(!s.success(), "{what}: exited successfully:\n{stderr}"),
    }
    stderr
}

fn fresh_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf").join(unique("cns-test-"))
}

#[test]
fn a_second_agent_on_the_same_pins_or_socket_is_refused() {
    if !kernel_or_skip("second agent") {
        return;
    }
    let mut c = Cluster::start(false, &[("p.yaml", ONLY_BETA)]);
    let gamma_blocked = |c: &Cluster| !tcp_ok(&c.gamma_client.netns, SERVER, 8080);
    assert!(gamma_blocked(&c), "gamma -> alpha is denied");
    let node = c.node.node.clone();
    let manifests = c.agent.manifests.clone();

    // Same pins, its own socket, audit mode and other map sizes: it would have taken over
    // the interfaces, switched the mode and deleted the first agent's maps.
    let stderr = refused(
        agent_cmd(
            Enter::Nsenter,
            &node,
            &manifests,
            &c.agent.dir.join("second.sock"),
            &c.agent.pin_dir,
            &["--policy-audit-mode=true", "--map-sizes", "policy=300"],
        ),
        "second agent on the same --bpffs-dir",
    );
    let pins = c.agent.pin_dir.display().to_string();
    assert!(
        stderr.contains(&format!("{pins} is in use by another cns-agent (pid "))
            && stderr.contains("--bpffs-dir"),
        "the error names the pin directory, the holder and the flag:\n{stderr}"
    );

    // The first agent still enforces, in blocking mode, on maps that still exist, and its
    // changes still reach the kernel.
    let status = c.agent.status();
    assert_eq!(status["mode"], "blocking", "{status:#}");
    let maps_dir = PathBuf::from(status["maps_dir"].as_str().expect("maps_dir"));
    assert!(maps_dir.is_dir(), "{} is gone", maps_dir.display());
    assert!(gamma_blocked(&c), "gamma -> alpha is still denied");
    c.agent.apply(
        "p.yaml",
        &ONLY_BETA.replace("{matchLabels: {team: beta}}", "{}"),
    );
    assert!(
        tcp_ok(&c.gamma_client.netns, SERVER, 8080),
        "the first agent's change (allow all) reaches the kernel"
    );
    c.agent.apply("p.yaml", ONLY_BETA);
    assert!(gamma_blocked(&c), "and back to only beta");

    // `uninstall` under a running agent is refused (the agent would attach again anyway).
    let (code, _, err) = cli(&["uninstall", "--bpffs-dir", &pins], &[]);
    assert!(
        code != 0
            && err.contains(&format!("{pins} is in use by another cns-agent (pid "))
            && err.contains("stop it first"),
        "{err}"
    );
    assert!(
        maps_dir.is_dir() && gamma_blocked(&c),
        "nothing was removed"
    );

    // Same socket, its own pins: it would have deleted the first agent's socket.
    let other_pins = fresh_pin_dir();
    let stderr = refused(
        agent_cmd(
            Enter::Nsenter,
            &node,
            &manifests,
            &c.agent.socket,
            &other_pins,
            &[],
        ),
        "second agent on the same --socket",
    );
    _ = std::fs::remove_dir_all(&other_pins);
    let lock = format!("{}.lock", c.agent.socket.display());
    assert!(
        stderr.contains(&format!("{lock} is in use by another cns-agent (pid "))
            && stderr.contains("--socket"),
        "the error names the socket's lock, the holder and the flag:\n{stderr}"
    );
    c.agent
        .sync()
        .expect("the first agent still answers on its socket");

    // A --socket that is a regular file is refused, and the file survives.
    let precious = c.agent.dir.join("precious.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let other_pins = fresh_pin_dir();
    let stderr = refused(
        agent_cmd(
            Enter::Nsenter,
            &node,
            &manifests,
            &precious,
            &other_pins,
            &[],
        ),
        "--socket pointing at a regular file",
    );
    _ = std::fs::remove_dir_all(&other_pins);
    assert!(
        stderr.contains(&format!(
            "the control socket path {} exists and is not a socket (it is a regular file)",
            precious.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me");

    // A restart after SIGKILL is not refused: the kernel dropped the dead agent's locks.
    c.agent.stop(nix::sys::signal::Signal::SIGKILL);
    c.agent.restart();
    assert!(gamma_blocked(&c), "enforcing after the restart");
}

#[test]
fn pins_in_a_private_mount_namespace_are_refused_unless_allowed() {
    if !kernel_or_skip("ephemeral pins") {
        return;
    }
    let node = VirtualNode::new();
    let dir = std::env::temp_dir().join(unique("cns-test-"));
    let manifests = dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("cluster.yaml"), cluster_yaml("client")).unwrap();
    let socket = dir.join("agent.sock");
    let pin_dir = fresh_pin_dir();

    let stderr = refused(
        agent_cmd(
            Enter::IpNetnsExec,
            &node.node,
            &manifests,
            &socket,
            &pin_dir,
            &[],
        ),
        "agent under ip netns exec",
    );
    assert!(
        stderr.contains(&format!(
            "the pins in {} would not outlive this agent",
            pin_dir.display()
        )) && stderr.contains("private mount namespace")
            && stderr.contains("nsenter --net")
            && stderr.contains("--allow-ephemeral-pins"),
        "the error says why and how to run it:\n{stderr}"
    );

    // Allowed: it runs and says loudly what it is doing.
    let mut bg = Background::spawn(&mut agent_cmd(
        Enter::IpNetnsExec,
        &node.node,
        &manifests,
        &socket,
        &pin_dir,
        &["--allow-ephemeral-pins"],
    ));
    let cli_sync = || {
        Command::new(agent_bin())
            .args(["sync", "--socket"])
            .arg(&socket)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    assert!(
        eventually(Duration::from_secs(30), cli_sync),
        "the agent with --allow-ephemeral-pins did not become ready:\n{}",
        bg.stderr()
    );
    assert!(
        bg.stderr()
            .contains("EPHEMERAL PINS (--allow-ephemeral-pins)"),
        "{}",
        bg.stderr()
    );
    // Its pins are not the host's: nothing of them is visible here.
    assert!(!pin_dir.exists(), "{} is on the host", pin_dir.display());
    bg.stop();
    _ = std::fs::remove_dir_all(&dir);
}

/// `cns-agent ARGS` (no root needed): exit code, stdout, stderr.
fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(agent_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run cns-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The smaller findings of issue 18 (8), through the real binary: none needs root.
#[test]
fn careless_input_is_read_or_refused_loudly() {
    let dir = std::env::temp_dir().join(unique("cns-test-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();

    // More than serde-saphyr's default 1,024 documents in one file.
    let many: String = (0..2000)
        .map(|i| format!("---\nkind: Namespace\napiVersion: v1\nmetadata: {{name: ns{i}}}\n"))
        .collect();
    std::fs::write(dir.join("many.yaml"), many).unwrap();
    let (code, _, err) = cli(&["policy", "check", &path("many.yaml")], &[]);
    assert_eq!(code, 0, "2000 documents:\n{err}");

    // What `kubectl get networkpolicies -o yaml` prints.
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata: {name: p, namespace: a}\n  spec: {podSelector: {matchLabels: {app: web}}, ingress: [{}]}\n";
    std::fs::write(dir.join("list.yaml"), list).unwrap();
    let (code, out, err) = cli(&["policy", "check", "-o", "json", &path("list.yaml")], &[]);
    assert_eq!(code, 0, "kind: List:\n{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["policies"], 1, "{report:#}");

    // A dangling link in a directory is an error, as the agent reports it.
    let links = dir.join("links");
    std::fs::create_dir_all(&links).unwrap();
    std::fs::copy(dir.join("list.yaml"), links.join("ok.yaml")).unwrap();
    std::os::unix::fs::symlink(links.join("gone.yaml"), links.join("dangling.yaml")).unwrap();
    let (code, out, err) = cli(&["policy", "check", &links.display().to_string()], &[]);
    assert_ne!(code, 0, "a dangling link must fail the check:\n{out}{err}");
    assert!(out.contains("dangling.yaml"), "{out}{err}");

    // `--xdp-interfaces ,,` is a mistake, not "none".
    let (code, _, err) = cli(&["run", "--node-name", "n", "--xdp-interfaces", ",,"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("--xdp-interfaces") && err.contains("empty interface name"),
        "{err}"
    );

    // An error prints its message; the backtrace only with -v.
    let missing = path("no-agent.sock");
    let bt = [("RUST_BACKTRACE", "1")];
    let (code, _, err) = cli(&["status", "--socket", &missing], &bt);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("Error: failed to reach the agent at") && !err.contains("backtrace"),
        "{err}"
    );
    let (_, _, err) = cli(&["-v", "status", "--socket", &missing], &bt);
    assert!(err.contains("Stack backtrace"), "-v shows it:\n{err}");

    // A reader that went away (`status | head -1`) ends the client quietly.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = Command::new(agent_bin())
        .args(["policy", "check", &path("list.yaml")])
        .stdout(std::process::Stdio::from(write))
        .output()
        .expect("run cns-agent");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("panicked"),
        "{:?}\n{err}",
        out.status
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
