//! HTML responses with the headers every page needs, and the cookies pages set and read.
use crate::lang::Lang;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use maud::Markup;

/// The style every page set starts from (sunlight first: black on white, large type, big touch
/// targets, one column on a phone), inline in each page before the set's own rules.
pub const BASE_STYLE: &str = include_str!("base.css");

/// The cookie that keeps a person's language choice.
pub const LANG_COOKIE: &str = "gg_lang";

/// `markup` as a response no page may frame, sniff or cache (a shared phone's browser), with a
/// policy that lets in no script and nothing from elsewhere.
pub fn html_response(markup: Markup) -> Response {
    let mut response = markup.into_response();
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A cookie's value from the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// A `Set-Cookie` header for a cookie only this site's HTTPS pages send back.
pub fn set_cookie(name: &str, value: &str, max_age_seconds: u64) -> (header::HeaderName, String) {
    (
        header::SET_COOKIE,
        format!(
            "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age_seconds}"
        ),
    )
}

/// The language switch: keeps `code`'s language in the cookie and goes back to `back` when it is
/// a page under `home` (never elsewhere: no open redirect), else to `home`.
pub fn switch_language(code: &str, back: Option<String>, home: &str) -> Response {
    let lang = Lang::parse(code);
    let back = back
        .filter(|b| b.starts_with(home) && !b.contains("//") && !b.contains('\\'))
        .unwrap_or_else(|| home.to_string());
    (
        [set_cookie(LANG_COOKIE, lang.code(), 365 * 86_400)],
        Redirect::to(&back),
    )
        .into_response()
}

/// The language the request's cookie chose (English without one).
pub fn language(headers: &HeaderMap) -> Lang {
    cookie(headers, LANG_COOKIE).map_or(Lang::En, |code| Lang::parse(&code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name_among_many() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; gg_lang=hi; gg_session=abc"),
        );
        assert_eq!(cookie(&headers, "gg_session").as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
        assert_eq!(language(&headers), Lang::Hi);
        assert_eq!(language(&HeaderMap::new()), Lang::En);
    }

    #[test]
    fn the_language_switch_goes_back_only_to_a_page_of_its_own_set() {
        let location = |back: Option<&str>| {
            let response = switch_language("hi", back.map(str::to_string), "/my/");
            let cookie = response.headers()[header::SET_COOKIE]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(cookie.starts_with("gg_lang=hi;"), "{cookie}");
            response.headers()[header::LOCATION]
                .to_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(location(Some("/my/?x=1")), "/my/?x=1");
        for away in [
            None,
            Some("//evil.example/my/"),
            Some("/admin"),
            Some("/my/\\x"),
            Some("https://e.x/my/"),
        ] {
            assert_eq!(location(away), "/my/", "{away:?}");
        }
    }
}
