//! `--notify URL`: post the run results as JSON to a webhook (Slack relays, alerting
//! gateways). A failing webhook is reported but never changes the run's outcome.

use std::time::Duration;

use super::results::RunResults;

/// The URL as safe to print: no user info, no query string (tokens often live there).
pub(crate) fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u.to_string()
        }
        Err(_) => "the --notify URL".into(),
    }
}

/// POST the results; Ok(status) or a message naming the (redacted) URL.
pub async fn post(url: &str, results: &RunResults) -> Result<u16, String> {
    let body = serde_json::to_vec(results).map_err(|e| e.to_string())?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| format!("notify {}: {e}", redacted(url)))?;
    let mut last = String::new();
    // Webhooks fail transiently; three tries with a short backoff.
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt))).await;
        }
        match client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(r.status().as_u16()),
            Ok(r) if r.status().is_client_error() => {
                return Err(format!(
                    "notify {}: the webhook answered {}",
                    redacted(url),
                    r.status()
                ))
            }
            Ok(r) => last = format!("the webhook answered {}", r.status()),
            Err(e) => last = e.without_url().to_string(),
        }
    }
    Err(format!("notify {}: {last}", redacted(url)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_urls_are_not_printed() {
        assert_eq!(
            redacted("https://user:pw@hooks.example.com/services/x?token=abc"),
            "https://hooks.example.com/services/x"
        );
    }
}
