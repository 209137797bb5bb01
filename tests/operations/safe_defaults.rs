//! Safe by default, at start: webhooks are signed or off, a start with no
//! trusted id source says what that means, and `check-config` shows the id
//! sources in effect.

use crate::common::*;

/// Finding 3: `IMAGE_WEBHOOK_PATHS` without a secret used to start with a
/// warning, and then anyone could POST images filed under any user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_03_webhook_capture_without_a_secret_refuses_to_start() {
    let env = [("IMAGE_WEBHOOK_PATHS", "/webhooks/replicate")];
    let (code, stderr) = Proxy::run_expect_fail(&env).await;
    assert_ne!(code, 0);
    assert!(
        stderr.contains("REPLICATE_WEBHOOK_SECRET"),
        "the error must name the missing setting:\n{stderr}"
    );
    let (code, _, stderr) = Proxy::run(&["check-config"], &env, secs(10)).await;
    assert_ne!(code, 0, "check-config accepted it");
    assert!(stderr.contains("REPLICATE_WEBHOOK_SECRET"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_prints_the_user_id_sources_in_effect() {
    let line = |stdout: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with("IMAGE_USER_ID_FROM"))
            .unwrap_or_default()
            .to_string()
    };
    let (code, stdout, stderr) = Proxy::run(&["check-config"], &[], secs(10)).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        line(&stdout),
        r#"IMAGE_USER_ID_FROM = "request-header:x-user-id,body:user_id,body:userId,anonymous""#
    );
    let env = [("IMAGE_USER_ID_FROM", "response-header:X-Studio-User")];
    let (code, stdout, stderr) = Proxy::run(&["check-config"], &env, secs(10)).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        line(&stdout),
        r#"IMAGE_USER_ID_FROM = "response-header:x-studio-user""#
    );
}

/// With only client-controlled sources, one warning line at start says the
/// per-user limit evicts nothing; with a trusted source there is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_without_a_trusted_id_source_warns_once() {
    let warning = "names no trusted source";
    let api = StudioApi::start().await;
    let p = Proxy::start(ProxyOptions::new(&api.url())).await;
    let logs = p.all_logs();
    assert_eq!(logs.matches(warning).count(), 1, "{logs}");
    let opts = ProxyOptions::new(&api.url()).env(TRUSTED_IDS.0, TRUSTED_IDS.1);
    let p = Proxy::start(opts).await;
    let logs = p.all_logs();
    assert_eq!(logs.matches(warning).count(), 0, "{logs}");
}
