//! Inbound webhooks: every provider's signature scheme, signed by the provider's own SDK
//! where one installs (stripe and standardwebhooks from PyPI, @octokit/webhooks-methods
//! from npm), otherwise by an independent Python hmac implementation (tests/e2e/py/webhook_sign.py).

use std::path::Path;
use std::process::Command;

use events_e2e::{Auth, Reply, TestServer, py_script, python, require_python_modules, unique_ns};
use serde_json::{Value, json};

const SECRET_A: &str = "secret-a-0123456789";
const SECRET_B: &str = "secret-b-9876543210";
const SVIX_A: &str = "whsec_c2VjcmV0LWEtMDEyMzQ1Njc4OWFiY2RlZg==";
const SVIX_B: &str = "whsec_c2VjcmV0LWItMDEyMzQ1Njc4OWFiY2RlZg==";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn write_body(body: &[u8]) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), body).unwrap();
    f
}

fn run_json(mut cmd: Command) -> Vec<(String, String)> {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect()
}

/// Headers a provider would send for `body`, signed with `secret` at `ts`.
fn sign(signer: &str, secret: &str, body: &[u8], ts: i64, delivery: &str) -> Vec<(String, String)> {
    let file = write_body(body);
    if signer == "github" {
        let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
        assert!(
            js.join("node_modules/@octokit/webhooks-methods").is_dir(),
            "run `npm ci` in {} (scripts/test.sh does it)",
            js.display()
        );
        let mut cmd = Command::new("node");
        cmd.current_dir(&js).arg("sign_github.mjs").arg(secret).arg(file.path());
        let mut h = run_json(cmd);
        h.push(("X-GitHub-Event".into(), "pull_request".into()));
        h.push(("X-GitHub-Delivery".into(), delivery.into()));
        return h;
    }
    let mut cmd = Command::new(python());
    cmd.arg(py_script("webhook_sign.py")).arg(signer).arg(secret).arg(file.path()).arg(ts.to_string()).arg(delivery);
    run_json(cmd)
}

struct Case {
    provider: &'static str,
    signer: &'static str,
    secrets: (&'static str, &'static str),
    /// Whether the provider signs a timestamp.
    timed: bool,
    expected_type: &'static str,
    config: Value,
}

fn body(case: &Case, n: u32, ts: i64) -> Vec<u8> {
    let v = match case.provider {
        "github" => json!({"action": "opened", "n": n}),
        "stripe" => json!({"id": format!("evt_{n}"), "type": "charge.succeeded", "n": n}),
        "slack" => {
            json!({"type": "event_callback", "event_id": format!("Ev{n}"), "event": {"type": "app_mention"}, "n": n})
        }
        "linear" => json!({"type": "Issue", "action": "create", "webhookTimestamp": ts * 1000, "n": n}),
        "workos" => json!({"id": format!("wevt_{n}"), "event": "user.created", "n": n}),
        "generic" if case.signer == "generic-base64" => json!({"type": "build.finished", "n": n}),
        _ => json!({"type": "invoice.paid", "n": n}),
    };
    serde_json::to_vec(&v).unwrap()
}

fn cases() -> Vec<Case> {
    let plain = (SECRET_A, SECRET_B);
    vec![
        Case {
            provider: "github",
            signer: "github",
            secrets: plain,
            timed: false,
            expected_type: "webhook.github.pull_request",
            config: json!({}),
        },
        Case {
            provider: "stripe",
            signer: "stripe",
            secrets: plain,
            timed: true,
            expected_type: "webhook.stripe.charge.succeeded",
            config: json!({}),
        },
        Case {
            provider: "slack",
            signer: "slack",
            secrets: plain,
            timed: true,
            expected_type: "webhook.slack.app_mention",
            config: json!({}),
        },
        Case {
            provider: "linear",
            signer: "linear",
            secrets: plain,
            timed: true,
            expected_type: "webhook.linear.Issue.create",
            config: json!({}),
        },
        Case {
            provider: "workos",
            signer: "workos",
            secrets: plain,
            timed: true,
            expected_type: "webhook.workos.user.created",
            config: json!({}),
        },
        Case {
            provider: "svix",
            signer: "svix",
            secrets: (SVIX_A, SVIX_B),
            timed: true,
            expected_type: "webhook.svix.invoice.paid",
            config: json!({}),
        },
        Case {
            provider: "standard-webhooks",
            signer: "standard-webhooks",
            secrets: (SVIX_A, SVIX_B),
            timed: true,
            expected_type: "webhook.standard-webhooks.invoice.paid",
            config: json!({}),
        },
        Case {
            provider: "generic",
            signer: "generic-hex",
            secrets: plain,
            timed: false,
            expected_type: "webhook.generic.thing.done",
            config: json!({}),
        },
        Case {
            provider: "generic",
            signer: "generic-base64",
            secrets: plain,
            timed: false,
            expected_type: "webhook.generic.build.finished",
            config: json!({"header": "X-My-Sig", "encoding": "base64"}),
        },
    ]
}

async fn configure(server: &TestServer, ns: &str, provider: &str, secrets: &[&str], extra: &Value) -> Reply {
    let mut body = json!({"secrets": secrets});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let url = server.url(&format!("/admin/namespaces/{ns}/webhooks/{provider}"));
    server.send(server.client().put(url).json(&body), &server.admin()).await
}

async fn deliver(server: &TestServer, provider: &str, ns: &str, headers: &[(String, String)], body: Vec<u8>) -> Reply {
    let mut rb = server.client().post(server.url(&format!("/webhooks/{provider}?ns={ns}"))).body(body);
    for (k, v) in headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    server.send(rb, &Auth::None).await
}

fn is_signature_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("signature") || n == "x-my-sig"
}

#[tokio::test]
async fn every_provider_verifies_rotates_and_refuses() {
    require_python_modules(&["stripe", "standardwebhooks"]);
    let server = TestServer::start().await;
    for case in cases() {
        let ns = unique_ns(&format!("wh-{}", case.signer));
        let p = case.provider;
        let label = case.signer;
        let (old, new) = case.secrets;

        // Unconfigured: nothing is accepted, even correctly signed.
        let b = body(&case, 1, now());
        let h = sign(case.signer, old, &b, now(), "d-1");
        deliver(&server, p, &ns, &h, b.clone()).await.expect_error(401, "INVALID_SIGNATURE");

        configure(&server, &ns, p, &[old], &case.config).await.expect(200);
        // Valid.
        let r = deliver(&server, p, &ns, &h, b.clone()).await;
        let v = r.expect(200);
        assert_eq!((v["ok"].clone(), v["accepted"].clone()), (json!(true), json!(true)), "{label}: {}", r.text);
        assert_eq!(v["event"]["type"], case.expected_type, "{label}: {}", r.text);
        // As the original's answer: verified, with the provider.
        assert_eq!((&v["verified"], &v["provider"]), (&json!(true), &json!(p)), "{label}: {}", r.text);
        assert_eq!(v["event"]["webhook"]["provider"], p, "{label}: {}", r.text);
        assert_eq!(v["event"]["webhook"]["verified"], true, "{label}: {}", r.text);
        let id = v["event"]["id"].as_str().unwrap().to_string();
        assert!(id.starts_with(&format!("{p}:")), "{label}: {id}");
        // The same delivery again: accepted, not stored twice.
        let r = deliver(&server, p, &ns, &h, b.clone()).await;
        assert_eq!(r.expect(200)["deduplicated"], true, "{label}: {}", r.text);
        let stored = server.wait_for_events(&server.admin_for(&ns), &format!("type={}", case.expected_type), 1).await;
        assert_eq!(stored.len(), 1, "{label}: {stored:?}");
        assert_eq!(stored[0]["verified"], true);
        assert_eq!(stored[0]["provider"], p);
        assert_eq!(stored[0]["payload"]["n"], 1, "{label}: {}", stored[0]);

        // Wrong secret.
        let b2 = body(&case, 2, now());
        let h_wrong = sign(case.signer, new, &b2, now(), "d-2");
        deliver(&server, p, &ns, &h_wrong, b2.clone()).await.expect_error(401, "INVALID_SIGNATURE");
        // Tampered body.
        let h_ok = sign(case.signer, old, &b2, now(), "d-2");
        let tampered = String::from_utf8(b2.clone()).unwrap().replace("\"n\":2", "\"n\":3").into_bytes();
        assert_ne!(tampered, b2);
        deliver(&server, p, &ns, &h_ok, tampered).await.expect_error(401, "INVALID_SIGNATURE");
        // Missing signature header.
        let stripped: Vec<(String, String)> = h_ok.iter().filter(|(k, _)| !is_signature_header(k)).cloned().collect();
        assert!(stripped.len() < h_ok.len(), "{label}: no signature header in {h_ok:?}");
        deliver(&server, p, &ns, &stripped, b2.clone()).await.expect_error(401, "INVALID_SIGNATURE");
        // Stale timestamp (correctly signed an hour ago).
        if case.timed {
            let stale = now() - 3600;
            let b_stale = body(&case, 4, stale);
            let h_stale = sign(case.signer, old, &b_stale, stale, "d-4");
            let r = deliver(&server, p, &ns, &h_stale, b_stale).await;
            r.expect_error(401, "INVALID_SIGNATURE");
            assert!(r.text.contains("seconds from now"), "{label}: {}", r.text);
        }

        // Rotation: both secrets active, both verify.
        configure(&server, &ns, p, &[old, new], &case.config).await.expect(200);
        for (i, secret) in [old, new].into_iter().enumerate() {
            let n = 10 + i as u32;
            let b = body(&case, n, now());
            let h = sign(case.signer, secret, &b, now(), &format!("d-{n}"));
            let r = deliver(&server, p, &ns, &h, b).await;
            assert_eq!(r.status, 200, "{label} rotation with secret #{i}: {}", r.text);
        }
        // The old one removed: refused.
        configure(&server, &ns, p, &[new], &case.config).await.expect(200);
        let b = body(&case, 20, now());
        let h = sign(case.signer, old, &b, now(), "d-20");
        deliver(&server, p, &ns, &h, b).await.expect_error(401, "INVALID_SIGNATURE");
    }
}

#[tokio::test]
async fn config_is_admin_only_and_masked_and_bodies_are_bounded() {
    let server = TestServer::start().await;
    let ns = unique_ns("wh-admin");
    let key = server.create_key(&ns).await.auth();
    let url = server.url(&format!("/admin/namespaces/{ns}/webhooks/github"));
    let r = server.send(server.client().put(url.clone()).json(&json!({"secrets": [SECRET_A]})), &key).await;
    r.expect_error(403, "FORBIDDEN");
    configure(&server, &ns, "github", &[SECRET_A, SECRET_B], &json!({})).await.expect(200);
    let r = server.get(&format!("/admin/namespaces/{ns}/webhooks/github"), &server.admin()).await;
    let v = r.expect(200);
    assert_eq!(v["configured"], true);
    assert_eq!(v["secrets"], json!(["****6789", "****3210"]));
    assert!(!r.text.contains(SECRET_A), "secrets must be masked: {}", r.text);
    // Bad configurations.
    configure(&server, &ns, "github", &[], &json!({})).await.expect_error(400, "INVALID_CONFIG");
    configure(&server, &ns, "github", &[SECRET_A], &json!({"encoding": "hex"}))
        .await
        .expect_error(400, "INVALID_CONFIG");
    configure(&server, &ns, "nope", &[SECRET_A], &json!({})).await.expect_error(400, "INVALID_REQUEST");

    // The query form routes the same way; ns defaults to "default".
    let r = server.post_raw("/webhooks?provider=github", &Auth::None, &[], b"{}".to_vec()).await;
    r.expect_error(401, "INVALID_SIGNATURE");
    // Over 1 MiB: 413, before any verification.
    let big = vec![b' '; 1024 * 1024 + 1];
    let r = server.post_raw(&format!("/webhooks/github?ns={ns}"), &Auth::None, &[], big).await;
    r.expect_error(413, "PAYLOAD_TOO_LARGE");
}
