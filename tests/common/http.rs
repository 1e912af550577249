//! Plain HTTP requests to a hub started as a process, for tests that look at what a browser
//! or a scraper gets (status codes, headers, bodies) rather than at the admin client's view.

use std::time::Duration;

/// How a request proves who it is.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    /// HTTP Basic, as a browser's login prompt sends it.
    Basic {
        user: &'a str,
        password: &'a str,
    },
}

/// What came back.
pub struct Answer {
    pub status: u16,
    /// `WWW-Authenticate`, if the answer had one.
    pub challenge: Option<String>,
    pub body: String,
}

/// `GET url`, on loopback, never through a proxy, within 30 s.
pub fn get(url: &str, auth: Auth<'_>) -> Answer {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
        let request = match auth {
            Auth::None => client.get(url),
            Auth::Bearer(token) => client.get(url).bearer_auth(token),
            Auth::Basic { user, password } => client.get(url).basic_auth(user, Some(password)),
        };
        let response = request.send().await.unwrap();
        let challenge =
            response.headers().get(reqwest::header::WWW_AUTHENTICATE).map(|v| v.to_str().unwrap().to_owned());
        Answer { status: response.status().as_u16(), challenge, body: response.text().await.unwrap() }
    })
}
