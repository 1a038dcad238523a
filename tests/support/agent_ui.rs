//! A real help desk's agent web UI, driven with the requests a browser sends: log in, the
//! zoom's Lock and Unlock links with the ChallengeToken, closing a ticket, log out. For the
//! end-to-end tests against Znuny 7 and OTRS 6 (`tests/it/e2e.rs`).

use std::time::{Duration, Instant};

/// One agent's session in the agent interface (`index.pl`).
pub struct AgentUi {
    agent: ureq::Agent,
    /// `http://127.0.0.1/znuny/`: where `index.pl` is.
    base: String,
    /// The `OTRSAgentInterface` session cookie, as `name=value`.
    cookie: String,
    /// The form token every state-changing request carries.
    token: String,
}

/// What a click answered, and how long the agent waited for it.
pub struct Click {
    pub status: u16,
    pub took: Duration,
    pub body: String,
}

impl Click {
    /// The answer to a request sent at `started`, read whole.
    fn of(mut response: ureq::http::Response<ureq::Body>, started: Instant) -> Click {
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Click {
            status,
            took: started.elapsed(),
            body,
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// The value of `name="ChallengeToken" value="..."` in an agent page.
fn challenge_token(page: &str) -> Option<String> {
    let at = page.find("name=\"ChallengeToken\"")?;
    let rest = &page[at..];
    let value = rest.find("value=\"")? + "value=\"".len();
    let end = rest[value..].find('"')?;
    Some(rest[value..value + end].to_string())
}

/// The `OTRSAgentInterface=...` pair of a response's cookies, if it sets one.
fn session_cookie(response: &ureq::http::Response<ureq::Body>) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .find(|pair| pair.starts_with("OTRSAgentInterface=") && pair.len() > 20)
        .map(str::to_string)
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", otnsx_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// application/x-www-form-urlencoded, for the few values the tests send.
fn otnsx_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl AgentUi {
    /// Logs `user` in as a browser does: the login page (its cookie check), then the form.
    pub fn login(base: &str, user: &str, password: &str) -> AgentUi {
        let agent = agent();
        let base = base.trim_end_matches('/').to_string() + "/";
        let index = format!("{base}index.pl");
        let _ = agent.get(&index).call().expect("the login page");
        let response = agent
            .post(&index)
            .header("content-type", "application/x-www-form-urlencoded")
            .send(form(&[
                ("Action", "Login"),
                ("RequestedURL", ""),
                ("Lang", "en"),
                ("TimeZoneOffset", "0"),
                ("User", user),
                ("Password", password),
            ]))
            .expect("the login form");
        let cookie = session_cookie(&response)
            .unwrap_or_else(|| panic!("{user} was not logged in to {index}: no session cookie"));
        let mut ui = AgentUi {
            agent,
            base,
            cookie,
            token: String::new(),
        };
        let page = ui.get("Action=AgentDashboard").body;
        ui.token = challenge_token(&page)
            .unwrap_or_else(|| panic!("no ChallengeToken in {user}'s dashboard"));
        ui
    }

    fn get(&self, query: &str) -> Click {
        let started = Instant::now();
        let response = self
            .agent
            .get(&format!("{}index.pl?{query}", self.base))
            .header("cookie", &self.cookie)
            .call()
            .expect("an agent request");
        Click::of(response, started)
    }

    /// The zoom's "Lock" link: the help desk runs its Generic Agent jobs inside this request.
    pub fn lock(&self, ticket: u64) -> Click {
        self.lock_link(ticket, "Lock")
    }

    /// The zoom's "Unlock" link.
    pub fn unlock(&self, ticket: u64) -> Click {
        self.lock_link(ticket, "Unlock")
    }

    fn lock_link(&self, ticket: u64, subaction: &str) -> Click {
        let click = self.get(&format!(
            "Action=AgentTicketLock;Subaction={subaction};TicketID={ticket};ChallengeToken={}",
            self.token
        ));
        assert_eq!(
            click.status,
            302,
            "{subaction} of ticket {ticket} did not answer with the zoom's redirect: {}",
            click.body.chars().take(300).collect::<String>()
        );
        click
    }

    /// Closes a ticket (state "closed successful") with a note, as the close dialog does.
    pub fn close(&self, ticket: u64) -> Click {
        let started = Instant::now();
        let ticket = ticket.to_string();
        let response = self
            .agent
            .post(&format!("{}index.pl", self.base))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .send(form(&[
                ("Action", "AgentTicketClose"),
                ("Subaction", "Store"),
                ("TicketID", &ticket),
                ("ChallengeToken", &self.token),
                ("NewStateID", "2"),
                ("Subject", "Done"),
                ("Body", "Maintenance done."),
            ]))
            .expect("the close form");
        Click::of(response, started)
    }
}

impl Drop for AgentUi {
    /// Logs out: the help desks allow an agent a limited number of sessions.
    fn drop(&mut self) {
        let _ = self.get(&format!("Action=Logout;ChallengeToken={}", self.token));
    }
}

/// Run by the harness in `tests/tests.rs`.
pub mod tests {
    pub fn the_challenge_token_is_read_from_a_form() {
        let page = r#"<input type="hidden" name="ChallengeToken" value="AbC123"/>"#;
        assert_eq!(super::challenge_token(page).as_deref(), Some("AbC123"));
    }
}
