//! The command line: `--help` documents every setting and subcommand;
//! `check-config` validates, prints the effective configuration and keeps
//! secrets out of its output.

use crate::common::*;
use permaproxy::config::settings::SETTINGS;

const SUBCOMMANDS: [&str; 4] = ["serve", "demo", "check-config", "cleanup"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_every_setting_and_subcommand() {
    let (code, stdout, stderr) = Proxy::run(&["--help"], &[], secs(10)).await;
    assert_eq!(code, 0, "--help exit code; stderr:\n{stderr}");
    for s in SETTINGS {
        assert!(
            stdout.contains(s.name),
            "--help does not list {}:\n{stdout}",
            s.name
        );
    }
    for sub in SUBCOMMANDS {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help does not list the {sub} command:\n{stdout}"
        );
    }
    assert!(stdout.contains("--config"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_prints_the_effective_config_without_secrets() {
    let secrets = [
        ("ADMIN_TOKEN", "topsecret-admin-token-for-check-config"),
        ("JWT_SECRET", "jwt-secret-value-42"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-value-43"),
    ];
    let mut env = secrets.to_vec();
    env.extend([
        ("IMAGE_DOWNLOAD_BURST", "7"),
        ("UPSTREAM_URL", "http://studio.railway.internal:3000"),
    ]);
    let (code, stdout, stderr) = Proxy::run(&["check-config"], &env, secs(10)).await;
    assert_eq!(code, 0, "check-config exit code; stderr:\n{stderr}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("check-config does not print {name}:\n{stdout}"))
            .to_string()
    };
    for s in SETTINGS {
        line(s.name);
    }
    assert!(line("IMAGE_DOWNLOAD_BURST").contains('7'), "{stdout}");
    assert!(line("UPSTREAM_URL").contains("studio.railway.internal:3000"));
    assert!(
        line("IMAGE_MAX_AGE_DAYS").contains("90"),
        "defaults are shown"
    );
    for (name, value) in secrets {
        assert!(
            !stdout.contains(value) && !stderr.contains(value),
            "check-config printed {name}'s value:\n{stdout}\n{stderr}"
        );
        assert!(line(name).contains("redacted"), "{}", line(name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_rejects_a_bad_setting_naming_it() {
    for (name, value) in [
        ("IMAGE_DOWNLOAD_BURST", "lots"),
        ("IMAGE_DOWNLOAD_RATE_PER_SEC", "-3"),
        ("TRUST_FORWARDED_FOR", "perhaps"),
        ("SHUTDOWN_GRACE_SECS", "soon"),
        ("LOG_FORMAT", "xml"),
    ] {
        let (code, stdout, stderr) = Proxy::run(
            &["check-config"],
            &[
                (name, value),
                ("ADMIN_TOKEN", "topsecret-admin-token-for-check-config"),
            ],
            secs(10),
        )
        .await;
        assert_ne!(code, 0, "{name}={value} accepted:\n{stdout}");
        assert!(
            stderr.contains(name),
            "{name}={value}: the error must name the setting:\n{stderr}"
        );
        assert!(
            !stdout.contains("topsecret-admin-token-for-check-config")
                && !stderr.contains("topsecret-admin-token-for-check-config")
        );
    }
}
