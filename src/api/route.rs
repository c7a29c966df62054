//! The content API's routes: which endpoint a method and path ask for, and
//! the call ids in paths. No I/O; any bytes give an answer.

use hyper::Method;

use crate::path::VPath;

/// Every route: method and path pattern (the OpenAPI document has exactly
/// these; metrics label requests with the pattern).
pub const ROUTES: [(&str, &str); 11] = [
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/calls"),
    ("GET", "/v1/calls/{id}"),
    ("DELETE", "/v1/calls/{id}"),
    ("GET", "/v1/calls/{id}/media/{name}"),
    ("HEAD", "/v1/calls/{id}/media/{name}"),
    ("POST", "/v1/calls/{id}/media/{name}/links"),
    ("GET", "/v1/links/{token}"),
    ("HEAD", "/v1/links/{token}"),
    ("GET", "/v1/events"),
    ("GET", "/healthz"),
];

/// The web page's routes (its files and its login session); not part of
/// the API's document.
pub const PAGE_ROUTES: [(&str, &str); 6] = [
    ("GET", "/"),
    ("GET", "/app.js"),
    ("GET", "/app.css"),
    ("GET", "/session"),
    ("POST", "/session"),
    ("DELETE", "/session"),
];

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// A file of the web page (its path).
    Page(&'static str),
    /// Who the page's session is.
    Session,
    Login,
    Logout,
    OpenApi,
    Health,
    Calls,
    Events,
    Call(&'a str),
    Erase(&'a str),
    Media {
        id: &'a str,
        name: &'a str,
        head: bool,
    },
    MakeLink {
        id: &'a str,
        name: &'a str,
    },
    Link {
        token: &'a str,
        head: bool,
    },
}

/// Why a request has no route.
#[derive(Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// No such path.
    NotFound,
    /// The path exists with other methods (for `Allow`).
    Method(&'static str),
}

impl<'a> Route<'a> {
    /// The route of `method` and `path`.
    pub fn of(method: &Method, path: &'a str) -> Result<Route<'a>, NoRoute> {
        let parts: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
        let m = method.as_str();
        let head = method == Method::HEAD;
        let (route, allow) = match parts.as_slice() {
            [_] if crate::api::page::asset(path).is_some() => (
                crate::api::page::asset(path)
                    .filter(|_| m == "GET")
                    .map(Route::Page),
                "GET",
            ),
            ["session"] => (
                match m {
                    "GET" => Some(Route::Session),
                    "POST" => Some(Route::Login),
                    "DELETE" => Some(Route::Logout),
                    _ => None,
                },
                "GET, POST, DELETE",
            ),
            ["healthz"] => (matches!(m, "GET").then_some(Route::Health), "GET"),
            ["v1", "openapi.json"] => (matches!(m, "GET").then_some(Route::OpenApi), "GET"),
            ["v1", "calls"] => (matches!(m, "GET").then_some(Route::Calls), "GET"),
            ["v1", "events"] => (matches!(m, "GET").then_some(Route::Events), "GET"),
            ["v1", "calls", id] if !id.is_empty() => (
                match m {
                    "GET" => Some(Route::Call(id)),
                    "DELETE" => Some(Route::Erase(id)),
                    _ => None,
                },
                "GET, DELETE",
            ),
            ["v1", "calls", id, "media", name] if !id.is_empty() && !name.is_empty() => (
                matches!(m, "GET" | "HEAD").then_some(Route::Media { id, name, head }),
                "GET, HEAD",
            ),
            ["v1", "calls", id, "media", name, "links"] if !id.is_empty() && !name.is_empty() => (
                matches!(m, "POST").then_some(Route::MakeLink { id, name }),
                "POST",
            ),
            ["v1", "links", token] if !token.is_empty() => (
                matches!(m, "GET" | "HEAD").then_some(Route::Link { token, head }),
                "GET, HEAD",
            ),
            _ => return Err(NoRoute::NotFound),
        };
        route.ok_or(NoRoute::Method(allow))
    }

    /// The route's pattern, as in [`ROUTES`].
    pub fn pattern(&self) -> &'static str {
        match self {
            Route::Page(p) => p,
            Route::Session | Route::Login | Route::Logout => "/session",
            Route::OpenApi => "/v1/openapi.json",
            Route::Health => "/healthz",
            Route::Calls => "/v1/calls",
            Route::Events => "/v1/events",
            Route::Call(_) | Route::Erase(_) => "/v1/calls/{id}",
            Route::Media { .. } => "/v1/calls/{id}/media/{name}",
            Route::MakeLink { .. } => "/v1/calls/{id}/media/{name}/links",
            Route::Link { .. } => "/v1/links/{token}",
        }
    }
}

/// A call as the API names it: `YYYY-MM-DD_<session id>` (the day folder
/// and the gateway's session id; the date has a fixed length, so any
/// session id follows it unambiguously).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallId {
    pub year: String,
    pub month: String,
    pub day: String,
    pub session: String,
}

impl CallId {
    /// Parses a call id; `None` for anything else.
    pub fn parse(s: &str) -> Option<CallId> {
        let (date, session) = (s.get(..10)?, s.get(10..)?.strip_prefix('_')?);
        let parsed = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
        if parsed.format("%Y-%m-%d").to_string() != date
            || !crate::path::is_name(session)
            || session.starts_with('.')
        {
            return None;
        }
        Some(CallId {
            year: date[..4].to_string(),
            month: date[5..7].to_string(),
            day: date[8..10].to_string(),
            session: session.to_string(),
        })
    }

    /// The id of session `session` of day `day` (`YYYY-MM-DD`).
    pub fn format(day: &str, session: &str) -> String {
        format!("{day}_{session}")
    }

    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        format!("{}-{}-{}", self.year, self.month, self.day)
    }

    /// The session folder in the tenant's tree.
    pub fn folder(&self) -> VPath {
        VPath::parse_absolute(&format!(
            "/{}/{}/{}/{}",
            self.year, self.month, self.day, self.session
        ))
        .unwrap_or_else(|_| VPath::root())
    }

    /// An entry of the session folder; `None` for a name that is not one.
    pub fn entry(&self, name: &str) -> Option<VPath> {
        if !crate::path::is_name(name) || name.starts_with('.') {
            return None;
        }
        VPath::parse_absolute(&format!("{}/{name}", self.folder())).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_parses_to_its_own_pattern() {
        for (m, pattern) in ROUTES.into_iter().chain(PAGE_ROUTES) {
            let path = pattern
                .replace("{id}", "2026-11-23_c-1")
                .replace("{name}", "c-1.mp4")
                .replace("{token}", "abc.def");
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            let route = Route::of(&method, &path).unwrap_or_else(|e| panic!("{m} {path}: {e:?}"));
            assert_eq!(route.pattern(), pattern, "{m} {path}");
        }
    }

    #[test]
    fn other_methods_and_paths_have_no_route() {
        assert_eq!(
            Route::of(&Method::PUT, "/v1/calls/x"),
            Err(NoRoute::Method("GET, DELETE"))
        );
        assert_eq!(
            Route::of(&Method::GET, "/v1/calls/x/media"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(
            Route::of(&Method::GET, "/v1/calls/"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(Route::of(&Method::GET, ""), Err(NoRoute::NotFound));
        assert_eq!(
            Route::of(&Method::GET, "/v1/calls/a/media/b/links/c"),
            Err(NoRoute::NotFound)
        );
    }

    #[test]
    fn call_ids_name_a_real_date_and_a_session_id() {
        let c = CallId::parse("2026-11-23_sess_1.x").unwrap();
        assert_eq!(c.folder().to_string(), "/2026/11/23/sess_1.x");
        assert_eq!(c.date(), "2026-11-23");
        assert_eq!(CallId::format(&c.date(), &c.session), "2026-11-23_sess_1.x");
        for bad in [
            "",
            "2026-11-23",
            "2026-11-23_",
            "2026-11-23-x",
            "2026-02-30_x",
            "2026-1-23_xyz",
            "2026-11-23_..",
            "2026-11-23_.hidden",
            "2026-11-23_a/b",
            "2026-11-23_a%2fb",
            "٢٠٢٦-11-23_x",
        ] {
            assert_eq!(CallId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(c.entry("../x"), None);
        assert_eq!(
            c.entry("agent.webm").unwrap().to_string(),
            "/2026/11/23/sess_1.x/agent.webm"
        );
    }
}
