//! The authorization-code exchange against the sandbox's LWA token endpoint:
//! PKCE verifier, redirect_uri and single use are enforced ([LWA], RFC 7636).

use amc_sync::amazon::Secret;
use amc_sync::amazon::lwa::{AuthorizeRequest, CallbackParams, CodeExchange, LwaError, Pkce};
use amc_sync::sandbox::{self, SandboxOptions};

const REDIRECT: &str = "http://127.0.0.1:9/cb";

/// Opens the authorize URL (auto-approve) and returns the code from the redirect.
async fn authorize(sb: &sandbox::Sandbox, http: &reqwest::Client, pkce: &Pkce) -> Secret {
    let url = AuthorizeRequest {
        authorize_url: &sb.authorize_url(),
        client_id: sb.client_id(),
        scope: "advertising::campaign_management",
        redirect_uri: REDIRECT,
        state: "st",
        code_challenge: &pkce.challenge,
    }
    .url();
    let resp = http.get(url).send().await.expect("authorize");
    assert_eq!(resp.status(), 302);
    let location = resp.headers()["location"]
        .to_str()
        .expect("ascii")
        .to_string();
    let query = location.split_once('?').expect("query").1;
    match amc_sync::amazon::lwa::parse_callback(query) {
        CallbackParams::Code { code, state } => {
            assert_eq!(state, "st");
            code
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn code_exchange_checks_the_pkce_verifier_redirect_uri_and_single_use() {
    let sb = sandbox::start(SandboxOptions::default()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let secret = Secret::new(sb.client_secret());
    let token_url = sb.token_url();
    let pkce = Pkce::generate().expect("pkce");

    // Wrong verifier: refused, and the message carries no secret.
    let code = authorize(&sb, &http, &pkce).await;
    let wrong = Pkce::generate().expect("pkce").verifier;
    let err = CodeExchange {
        token_url: &token_url,
        code: &code,
        redirect_uri: REDIRECT,
        code_verifier: &wrong,
        client_id: sb.client_id(),
        client_secret: &secret,
    }
    .send(&http)
    .await
    .expect_err("wrong verifier");
    match &err {
        LwaError::Refused {
            error, description, ..
        } => {
            assert_eq!(error, "invalid_grant");
            assert!(description.contains("code_verifier"), "{description}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains(secret.expose()));

    // Another redirect_uri than the one authorized: refused.
    let code = authorize(&sb, &http, &pkce).await;
    let err = CodeExchange {
        token_url: &token_url,
        code: &code,
        redirect_uri: "http://127.0.0.1:9/other",
        code_verifier: &pkce.verifier,
        client_id: sb.client_id(),
        client_secret: &secret,
    }
    .send(&http)
    .await
    .expect_err("redirect mismatch");
    assert!(
        matches!(err, LwaError::Refused { ref error, .. } if error == "invalid_grant"),
        "{err}"
    );

    // The right verifier works once; the same code again is refused.
    let code = authorize(&sb, &http, &pkce).await;
    let ok = CodeExchange {
        token_url: &token_url,
        code: &code,
        redirect_uri: REDIRECT,
        code_verifier: &pkce.verifier,
        client_id: sb.client_id(),
        client_secret: &secret,
    };
    let tokens = ok.send(&http).await.expect("exchange");
    assert!(
        tokens
            .refresh_token
            .is_some_and(|t| t.expose().starts_with("Atzr|"))
    );
    let err = ok.send(&http).await.expect_err("reused code");
    assert!(
        matches!(err, LwaError::Refused { ref error, .. } if error == "invalid_grant"),
        "{err}"
    );

    // A wrong client secret: invalid_client.
    let code = authorize(&sb, &http, &pkce).await;
    let bad = Secret::new("not-the-secret");
    let err = CodeExchange {
        token_url: &token_url,
        code: &code,
        redirect_uri: REDIRECT,
        code_verifier: &pkce.verifier,
        client_id: sb.client_id(),
        client_secret: &bad,
    }
    .send(&http)
    .await
    .expect_err("bad secret");
    assert!(
        matches!(err, LwaError::Refused { ref error, .. } if error == "invalid_client"),
        "{err}"
    );
}
